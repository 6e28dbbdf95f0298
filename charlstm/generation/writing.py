"""What ``charlstm sample`` writes: samples (or the beam's one continuation) for each temperature
asked for, as text streamed to a file or stdout, or as one JSON record per sample.

Every record carries the seed actually used (one is drawn when none was given), so any sample can
be made again: ``charlstm sample RUN --seed SEED`` with the same settings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
import time
from typing import TextIO

from charlstm.evaluation.adaptation import adapt_to_source
from charlstm.generation.beam import beam_search
from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import AdaptConfig, SampleConfig
from charlstm.hardware import select_device
from charlstm.generation.sampling import TextStream, encode_prime, generate
from charlstm.data.text import TextSource


def write_samples(
    checkpoint: str,
    configs: list[SampleConfig],
    echo_prime: bool,
    as_json: bool,
    out: TextIO,
    adapt_to: tuple[TextSource, AdaptConfig] | None = None,
    on_adapted=None,
    on_progress=None,
) -> None:
    """Sample from ``checkpoint`` once per config (several temperatures: the same seed for each),
    writing text or JSON lines to ``out``. The first sample of each set streams as it is made.

    ``adapt_to`` (a text and how to adapt): first adapt the weights to that text by dynamic
    evaluation (``charlstm.evaluation.adaptation``); ``on_adapted(loss, tokens, seconds)`` is told how it went
    and ``on_progress(tokens)`` follows it."""
    device = select_device(configs[0].device)
    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint), device, checkpoint)
    encode_prime(tokenizer, configs[0].prime)  # a bad prime fails before anything is written
    if adapt_to is not None:
        source, adapt_config = adapt_to
        started = time.perf_counter()
        loss, n_tokens = adapt_to_source(model, tokenizer, source, adapt_config, device, on_progress)
        if on_adapted is not None:
            on_adapted(loss, n_tokens, time.perf_counter() - started)
    seed = configs[0].seed if configs[0].seed is not None else secrets.randbelow(2**31)
    labelled = len(configs) > 1 and not as_json
    for index, config in enumerate(configs):
        config = dataclasses.replace(config, seed=seed)
        if labelled:
            out.write(("\n" if index else "") + f"== temperature {config.temperature:g} ==\n")
        if config.beam_width is not None:
            texts, tokens, logprobs = _beam(model, tokenizer, config, device)
            if not as_json:
                out.write((config.prime if echo_prime else "") + texts[0] + "\n")
        else:
            texts, tokens, logprobs = _sampled(model, tokenizer, config, device, out if not as_json else None,
                                               config.prime if echo_prime else "")
        if as_json:
            for text, n, lp in zip(texts, tokens, logprobs):
                record = {
                    "text": text,
                    "prime": config.prime,
                    "seed": seed,
                    "temperature": config.temperature,
                    "tokens": n,
                    "mean_logprob": lp,
                    "settings": {k: v for k, v in config.to_dict().items() if k not in ("prime", "seed")},
                }
                if adapt_to is not None:
                    record["adapted_to"] = {"text": adapt_to[0].name, **adapt_to[1].to_dict()}
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()


def _sampled(model, tokenizer, config: SampleConfig, device, out: TextIO | None, prime: str):
    """Sample; with ``out``, stream the first sample there and write the others after it,
    separated by a blank line. Returns the texts, token counts and mean log-probabilities."""
    generation = generate(model, tokenizer, config, device)
    texts = [[] for _ in range(config.num_samples)]
    if out is not None:
        out.write(prime)
    for pieces in generation:
        for buffer, piece in zip(texts, pieces):
            buffer.append(piece)
        if out is not None and pieces[0]:
            out.write(pieces[0])
            out.flush()
    texts = ["".join(t) for t in texts]
    if out is not None:
        for text in texts[1:]:
            out.write("\n\n" + prime + text)
        out.write("\n")
    return texts, generation.tokens, generation.mean_logprob


def _beam(model, tokenizer, config: SampleConfig, device):
    """The most likely continuation of ``config.length`` tokens, cut at ``--stop``."""
    ids, logprob = beam_search(
        model, tokenizer, encode_prime(tokenizer, config.prime), config.length, config.beam_width, device,
        no_repeat_ngram=config.no_repeat_ngram,
    )
    table = tokenizer.token_bytes()
    stream = TextStream(length=4 * config.length + 64, stop=config.stop)  # --length counts tokens here
    text = "".join(stream.feed(table[i]) for i in ids) + stream.finish()
    return [text], [len(ids)], [logprob / len(ids) if ids else math.nan]
