"""Scoring lines: how likely the model finds each line of a text, in nats and bits per character.

Each line is scored on its own, from a zero state, every one of its tokens included: the first
token is predicted after a newline token (``charlstm.data.tokenizers.default_start_id``), as if
the line began a line of the training text, so a one-character line gets a score too. The line's end (a newline
after it) is not scored. Characters the char vocabulary lacks are scored as the unknown symbol,
as evaluation does. A line with no tokens (the empty line) is not run: its logprob is 0 and its
bits per character nan.

Lines are sorted by length and run in batches of similar lengths, padded and masked, so a
thousand short lines take a few dozen model calls at most, not a thousand; long lines are read in
windows of ``bptt`` tokens, carrying the state, so memory stays bounded.

With a neural cache (``score --cache-size N``, ``evaluation.cache``) each line is still read from a
zero state, but its tokens are also copied from the last N tokens of the lines before it and its
own earlier tokens, in the order of the text: lines run in batches in their own order then, and
a line that repeats an earlier one scores far better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from charlstm.data.batches import get_window, windows
from charlstm.config import CacheConfig
from charlstm.evaluation.cache import NeuralCache, token_nll
from charlstm.data.tokenizers import default_start_id


@dataclass
class LineScore:
    text: str
    tokens: int  # tokens in the line, all scored
    chars: int  # Unicode characters in the line
    logprob: float  # log-probability of the line's tokens, nats (0 for an empty line)
    bits_per_char: float  # -logprob in bits per character (nan for an empty line)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def score_lines(
    model,
    tokenizer,
    lines: Sequence[str],
    device,
    batch_size: int = 64,
    bptt: int = 256,
    on_progress=None,
    cache_config: CacheConfig | None = None,
) -> list[LineScore]:
    """A ``LineScore`` for each of ``lines`` (without their newlines), in the same order.

    ``batch_size`` lines of similar length run side by side, in windows of ``bptt`` tokens. The
    results do not depend on either, up to float rounding. ``on_progress(tokens)`` is called
    after each window with the tokens it scored (all of them add up to the lines' tokens).
    """
    encoded = [np.asarray(tokenizer.encode(line), dtype=np.int64) for line in lines]
    start = default_start_id(tokenizer)
    results: list[LineScore | None] = [None] * len(lines)
    for i, line in enumerate(lines):
        if len(encoded[i]) == 0:
            results[i] = LineScore(line, 0, len(line), 0.0, math.nan)
    # Shortest first, so each batch pads its lines only up to a length close to their own; in
    # the text's order with a cache, which reads the lines in order.
    order = [i for i in range(len(lines)) if len(encoded[i])]
    cache = None
    if cache_config is not None and cache_config.cache_size > 0:
        cache = NeuralCache(cache_config, device, vocab_size=model.config.vocab_size)
    else:
        order.sort(key=lambda i: len(encoded[i]))

    was_training = model.training
    model.eval()
    for first in range(0, len(order), batch_size):
        group = order[first : first + batch_size]
        lengths = torch.tensor([len(encoded[i]) for i in group], device=device)  # (B,)
        longest = int(lengths.max())
        # Row 0 is the start token; padding repeats it (any id would do: it is masked out).
        block = np.full((longest + 1, len(group)), start, dtype=np.int64)  # (T+1, B)
        for column, i in enumerate(group):
            block[1 : len(encoded[i]) + 1, column] = encoded[i]
        block = torch.from_numpy(block).to(device)
        real = torch.arange(longest, device=device).unsqueeze(1) < lengths  # (T, B): not padding
        total = torch.zeros(len(group), dtype=torch.float64, device=device)  # (B,)
        hidden = None
        pieces = []  # with a cache: each window's (features, nll) for the pass in order below
        for window in windows(longest + 1, bptt):
            x, y = get_window(block, window)  # (t, B) each
            if cache is None:
                logits, hidden = model(x, hidden)  # (t, B, V)
            else:
                logits, features, hidden = model.forward_features(x, hidden)  # (t, B, V), (t, B, H)
            nll = token_nll(logits, y)  # (t, B)
            valid = real[window.start : window.start + window.length]  # (t, B)
            if cache is None:
                total += (nll.double() * valid).sum(dim=0)
            else:
                pieces.append((features, nll))
            if on_progress is not None:
                on_progress(int(valid.sum()))
        if cache is not None:
            features = torch.cat([f for f, _ in pieces])  # (T, B, H)
            nll = torch.cat([n for _, n in pieces])  # (T, B)
            for column in range(len(group)):
                length = int(lengths[column])
                targets = block[1 : length + 1, column]  # (length,)
                cached = cache.score(features[:length, column], -nll[:length, column], targets)  # (length,)
                total[column] = cached.sum(dtype=torch.float64)
        for column, i in enumerate(group):
            logprob, chars = -float(total[column]), len(lines[i])
            bits_per_char = -logprob / math.log(2) / chars
            results[i] = LineScore(lines[i], int(lengths[column]), chars, logprob, bits_per_char)
    model.train(was_training)
    return results  # type: ignore[return-value]


@dataclass
class TokenScores:
    """Each token of a prompt scored as ``score_lines`` scores a line: read after the start
    token, from a zero state. ``logprobs[i]`` is the log-probability (nats) of token ``i`` given
    those before it; ``top[i]`` the ``top`` most likely tokens there, as (id, logprob) pairs."""

    logprobs: list[float]
    top: list[list[tuple[int, float]]]


@torch.inference_mode()
def score_tokens(model, tokenizer, ids: Sequence[int], device, top: int = 0, bptt: int = 256) -> TokenScores:
    """The log-probability of each of ``ids`` after the start token
    (``charlstm.data.tokenizers.default_start_id``) and the tokens before it, and at each
    position the ``top`` most likely tokens: the per-token view of ``score_lines``, whose line
    logprob is the sum of these for the line's ids. A prompt that already begins with the start
    token is read from there (the start token is not read twice); its first entry is then the
    start token's own, and means nothing. Long prompts are read in windows of ``bptt`` tokens."""
    start = default_start_id(tokenizer)
    begins = len(ids) > 0 and ids[0] == start
    block = torch.tensor(list(ids) if begins else [start, *ids], dtype=torch.long, device=device).unsqueeze(1)  # (T+1, 1)
    was_training = model.training
    model.eval()
    logprobs: list[float] = [0.0] if begins else []
    tops: list[list[tuple[int, float]]] = [[]] if begins else []
    hidden = None
    for window in windows(len(block), bptt):
        x, y = get_window(block, window)  # (t, 1) each
        logits, hidden = model(x, hidden)  # (t, 1, V)
        nll = token_nll(logits, y)  # (t, 1): the same figures score_lines sums
        logprobs += (-nll[:, 0]).tolist()
        if top:
            values, best = logits[:, 0].float().log_softmax(dim=-1).topk(min(top, logits.size(-1)), dim=-1)  # (t, k)
            tops += [list(zip(i, v)) for i, v in zip(best.tolist(), values.tolist())]
        else:
            tops += [[] for _ in range(len(y))]
    model.train(was_training)
    return TokenScores(logprobs, tops)
