"""Sampling text from a model: ``generate`` drives one request of the engine.

The hidden state is carried one token at a time; the prime is read once and never fed again.
The filters (``generation.filters``) apply in one fixed order:

    repetition penalty, no-repeat n-gram ban, temperature (0: the most likely token left),
    top-k, top-p, min-p, then one draw per row from what is left.

``generation.engine`` does the work for every driver (this one, ``chat``, the server); this
module is the in-process way to ask for it and read what it did.
"""

from __future__ import annotations

import math

import torch

from charlstm.cells import Hidden
from charlstm.stepper import TokenStepper
from charlstm.config import SampleConfig
from charlstm.generation.cache import GenerationCache
from charlstm.generation.engine import STEPPED_PRIME, Engine, Request, read_prime  # noqa: F401 (re-exported)
from charlstm.generation.filters import (  # noqa: F401 (re-exported: the pure functions on logits)
    NgramBlocker,
    apply_temperature,
    min_p_filter,
    next_tokens,
    no_repeat_ngram_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from charlstm.generation.text import TextStream, encode_prime  # noqa: F401 (re-exported)


class Generation:
    """One call of ``generate``: iterate over it for the text, then read what it measured.

    It is an iterator: it yields, after each generated token, the new text of every sample (a
    list of ``num_samples`` strings, some of them empty), and runs once. While and after it runs:

    ``hidden``
        The model's state after reading the prime and every token yielded so far, one row per
        sample. A sample that has finished (its length, or its stop string) keeps its state from
        that moment, so the tokens a batch draws for it afterwards, and throws away, leave no
        trace. Pass it as ``generate(..., hidden=...)`` to go on where this left off; the text
        cut off by ``--length`` or held back as the stop string has been read too.
    ``logprob``, ``tokens``
        Per sample, the sum of the log-probabilities (nats) of the tokens it drew, under the
        model's own softmax at temperature 1 before any filter, and how many tokens that is:
        every token drawn while the sample was running, the one that finished it included.
        ``mean_logprob`` divides the two.

    Each read of ``hidden`` and ``logits`` is a copy, taken at that moment.
    """

    def __init__(
        self, model, tokenizer, config: SampleConfig, device, hidden: Hidden | None = None, stepper=None, cache=None,
        stops: tuple[str, ...] = (),
    ):
        if cache is None and config.cache_size:
            cache = GenerationCache(config.cache_config(), config.num_samples, model.rnn.hidden_size, device)
        self.cache = cache  # a GenerationCache to go on with (chat), else one made for --cache-size
        self.config = config
        self._start = hidden
        self._engine = Engine(model, tokenizer, device, weights=config.weights, stepper=stepper)
        # Each token is at least one byte, and --length counts characters of at most 4 bytes, but
        # a subword piece may be longer; cap the token budget generously against runaway loops.
        stops = ((config.stop,) if config.stop else ()) + tuple(stops)
        one_char = self._engine.table is not None and not stops
        self.request = Request(
            config, encode_prime(tokenizer, config.prime), config.length if one_char else config.length * 4 + 64,
            rows=config.num_samples, max_chars=config.length, stops=stops,
            hidden=hidden, cache=cache,
        )
        self._started = False
        self._inference = torch.inference_mode()

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> list[str]:
        with self._inference:  # entered per token: cheaper than decorating a generator
            if not self._started:
                self._started = True
                if self.config.length == 0:
                    raise StopIteration
                self._engine.add(self.request)
            if self.request.finished:
                raise StopIteration
            self._engine.step()
            return self._engine.pieces_of(self.request)

    @property
    def finish_reasons(self) -> list[str | None]:
        """Per sample: "stop" (a stop string, or a pattern's end), "length", or None while it runs."""
        return list(self.request.reasons)

    @property
    def hidden(self) -> Hidden | None:
        hidden = self._engine.hidden_of(self.request)
        return self._start if hidden is None else hidden

    @property
    def logits(self) -> torch.Tensor | None:
        """(B, V): the next token's, given ``hidden`` (None before the prime is read)."""
        return self._engine.logits_of(self.request)

    @property
    def logprob(self) -> list[float]:
        return self._engine.logprob_of(self.request)[0]

    @property
    def tokens(self) -> list[int]:
        return self._engine.logprob_of(self.request)[1]

    @property
    def mean_logprob(self) -> list[float]:
        """Per sample, the mean log-probability per token (nan before any token)."""
        return [lp / n if n else math.nan for lp, n in zip(*self._engine.logprob_of(self.request))]


def generate(
    model,
    tokenizer,
    config: SampleConfig,
    device,
    hidden: Hidden | None = None,
    stepper: TokenStepper | None = None,
    cache: GenerationCache | None = None,
    stops: tuple[str, ...] = (),
) -> Generation:
    """Stream ``config.num_samples`` samples, generated together as one batch (see ``Generation``
    for what it yields and records). Stops when every sample has its length or its stop string.

    ``stepper``: a ``TokenStepper`` of ``model`` to reuse (built here otherwise; an interactive
    session keeps one). ``hidden`` is a state to start from instead of zeros, such as an earlier
    ``Generation``'s ``hidden``, with one row or one per sample; the prime is read on top of it
    (an empty prime reads a newline, as always). The repetition penalty and the n-gram ban see
    this call's prime and output only. ``config.cache_size``: a neural cache
    (``generation.cache``) mixed into every draw; ``cache``: one to go on with (a chat's), which
    remembers this call's prime and output too. ``stops``: strings that end a sample besides
    ``config.stop`` (a chat template's next-turn marker). ``config.beam_width`` is for
    ``charlstm.generation.beam.beam_search``, not for this.
    """
    if config.beam_width is not None:
        raise ValueError("generate() samples; beam search is charlstm.generation.beam.beam_search")
    if hidden is not None and hidden[0].size(1) not in (1, config.num_samples):
        raise ValueError(
            f"the start state has {hidden[0].size(1)} rows; it needs 1 or one per sample "
            f"({config.num_samples})"
        )
    return Generation(model, tokenizer, config, device, hidden, stepper, cache, stops)
