"""Loss, perplexity, bits per character and bits per byte of a model over a token stream."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from charlstm.evaluation.adaptation import adapt, model_step
from charlstm.data.batches import encode_to_file, windows
from charlstm.config import AdaptConfig, CacheConfig
from charlstm.evaluation.cache import NeuralCache, cached_stream_loss, remember_read, token_nll  # noqa: F401 (token_nll: score)
from charlstm.errors import DataError
from charlstm.hardware import FP32, Precision
from charlstm.data.text import TextSource


@dataclass
class CachedScore:
    """The same text scored with the neural cache mixed in (``charlstm eval --cache-size N``)."""

    loss: float  # nats per token
    bits_per_char: float
    bits_per_byte: float
    seconds: float  # the cached pass alone (one stream); 0 when it rode on the adapting pass
    cache_size: int
    cache_theta: float  # the pair in use at the end (chosen as the text was read, unless given)
    cache_lambda: float


@dataclass
class AdaptedScore:
    """The same text scored with dynamic evaluation (``charlstm eval --adapt``)."""

    loss: float  # nats per token
    bits_per_char: float
    bits_per_byte: float
    seconds: float  # the adapting pass alone
    adapt_lr: float
    adapt_decay: float
    adapt_bptt: int
    adapt_method: str = "sgd"
    adapt_depth: int | None = None
    adapt_tune: float = 0.0
    adapt_prior: int = 0  # as used: 0 when the model had no training second moments
    tuned_lr: float | None = None  # lr and decay at the end of the text (--adapt-tune learns them)
    tuned_decay: float | None = None
    cached: CachedScore | None = None  # adapting and the cache together (--adapt --cache-size N)


@dataclass
class EvalReport:
    tokens: int  # tokens in the text
    chars: int  # Unicode characters in the text
    bytes: int  # UTF-8 bytes in the text
    loss: float  # mean negative log-likelihood, nats per token
    perplexity: float  # exp(loss), per token
    bits_per_char: float
    bits_per_byte: float
    unknown: int  # characters scored as the unknown symbol (char tokenizer only)
    replacements: int  # invalid byte sequences read as U+FFFD (--encoding-errors replace)
    seconds: float = 0.0  # the scoring pass alone (not loading or encoding)
    adapted: AdaptedScore | None = None  # with --adapt
    cached: CachedScore | None = None  # with --cache-size N (static weights, one stream)
    context_tokens: int = 0  # tokens of the context (--context) read before the text, unscored

    def to_dict(self) -> dict:
        return asdict(self)


# Tokens of the preceding text each parallel stream reads, unscored, before its own part: enough
# for a character model's state to forget that it started cold (measured in docs/measuring.md, "charlstm eval").
WARMUP_TOKENS = 256

# The shortest part a parallel stream scores. A state started cold in the wrong place (inside a
# block of capitals, say) can settle into a regime that stays wrong for thousands of characters:
# a model trained 36 s on 213 KB of licences scored its last 24 KB at 1.768 nats/char as one
# stream and at 1.978 as 64 warm streams of 371 characters (3.854 as 5 with 1,024 tokens of
# warm-up). Parts this long make such a start rare and its cost small; below two of them the
# text is one stream, which for so short a text costs no more than a second.
MIN_PART_TOKENS = 16384

# Tokens at the end of a context that dynamic evaluation learns from before the text
# (``evaluate_source``); before them the context is only read. Learning from the last 20,000
# took 0.05-0.07 bits per byte more off licence texts and a log than reading them alone
# (benchmarks/RESULTS.md, "Not prose").
CONTEXT_ADAPT_TOKENS = 20_000


@torch.inference_mode()
def stream_loss(
    model,
    ids: np.ndarray,
    *,
    batch_size: int,
    bptt: int,
    device,
    precision: Precision | None = None,
    warmup: int = WARMUP_TOKENS,
    skip: int = 0,
    min_part: int | None = None,
    on_progress=None,
) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods over ``ids``, and how many tokens were scored.
    ``on_progress(tokens)``, when given, is called after each window with the tokens it scored.

    The stream is split into ``batch_size`` contiguous parts run side by side, each carrying its
    hidden state from window to window. Every part but the first starts warm: it first reads the
    ``warmup`` tokens before it (which the part before scores), so its first tokens are scored
    with context as they would be in one long stream. Only the text's first token is not scored
    (the last part is padded, and the padding masked out). Each part is at least ``min_part``
    tokens long (``MIN_PART_TOKENS``), so a short text is one stream. The first ``skip`` tokens are
    context: read, never scored (``evaluate_source``'s ``context``).
    """
    n = len(ids)
    streams = max(1, min(batch_size, n // (min_part or MIN_PART_TOKENS)))
    rows = math.ceil(n / streams)
    starts = np.arange(streams) * rows  # where each stream begins in ``ids``

    was_training = model.training
    model.eval()
    device = torch.device(device)
    autocast = (precision or FP32).autocast
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    if streams > 1 and warmup > 0:
        with autocast(device):
            extra, total, count = _warm_up(model, ids, starts[1:], min(warmup, rows), device, skip)
        zero = model.init_hidden(1)  # the first part has nothing before it
        hidden = tuple(torch.cat([z, h.to(z.dtype)], dim=1) for z, h in zip(zero, extra))
        if on_progress is not None:
            on_progress(count)
    for window in windows(rows, bptt):
        # Gather one window of rows (inputs plus the next row of targets) straight from ``ids``,
        # which may be a memory-mapped file: nothing the size of the text is ever built.
        index = starts + np.arange(window.start, window.start + window.length + 1)[:, None]  # (t+1, B)
        valid = torch.from_numpy((index[1:] < n) & (index[1:] >= skip)).to(device)  # (t, B); the last stream is short
        block = _gather(ids, np.minimum(index, n - 1), device)
        x, y = block[:-1], block[1:]  # (t, B) each
        with autocast(device):
            logits, hidden = model(x, hidden)  # (t, B, V)
        total += (token_nll(logits, y) * valid).sum(dtype=torch.float64)
        scored = int(valid.sum())
        count += scored
        if on_progress is not None:
            on_progress(scored)
    model.train(was_training)
    return float(total), count


def _gather(ids: np.ndarray, index: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(ids[index]).astype(np.int64)).to(device)


def _warm_up(model, ids: np.ndarray, starts: np.ndarray, length: int, device, skip: int = 0):
    """Run the model over the ``length`` tokens before each of ``starts``: the hidden state it
    leaves, and the loss (and count) of its last prediction, which is of each start's own token."""
    n = len(ids)
    index = starts - length + np.arange(length + 1)[:, None]  # (length+1, S)
    block = _gather(ids, np.minimum(index, n - 1), device)
    logits, hidden = model(block[:-1])  # (length, S, V)
    valid = torch.from_numpy((starts < n) & (starts >= skip)).to(device)  # (S,); a short text can leave the last part empty
    first = token_nll(logits[-1:], block[-1:])[0] * valid  # each part's first token
    return hidden, first.sum(dtype=torch.float64), int(valid.sum())


def evaluate_source(
    model,
    tokenizer,
    source: TextSource,
    *,
    batch_size: int,
    bptt: int,
    device,
    adapt_config: AdaptConfig | None = None,
    cache_config: CacheConfig | None = None,
    context: TextSource | None = None,
    on_progress=None,
) -> EvalReport:
    """Score a text with the model and report per-token, per-character and per-byte figures.

    The text is encoded chunk by chunk into a temporary memory-mapped file, so a large file is
    never held in memory. Bits per character and per byte do not depend on the tokenizer, so
    char, byte and subword models can be compared. The mean loss over the scored tokens stands
    for the one unscored (the first). With ``adapt_config`` the text is scored a second time
    with dynamic evaluation (``charlstm.evaluation.adaptation``), which changes ``model``'s weights;
    ``on_progress(tokens)`` follows that pass. With ``cache_config`` (a ``cache_size`` above 0)
    the text is also read as one stream with the neural cache (``charlstm.evaluation.cache``),
    and the adapting pass, if any, scores with the cache as well.

    ``context``: the text that comes before this one (``eval --context FILE``), read and never
    scored, as a compressor given a dictionary reads it: its last tokens start each pass's
    state, fill the cache (its last ``cache_size`` tokens, which also choose the cache's theta
    and lambda) and, with dynamic evaluation, its last ``CONTEXT_ADAPT_TOKENS`` are learnt from
    first. With a context every token of the text is scored, the first too.
    """
    if cache_config is not None and cache_config.cache_size == 0:
        cache_config = None
    with tempfile.TemporaryDirectory(prefix="charlstm-eval-") as tmp:
        encoded = encode_to_file(source, tokenizer, Path(tmp) / "tokens")
        before = encode_to_file(context, tokenizer, Path(tmp) / "context").ids if context is not None else encoded.ids[:0]
        if len(encoded.ids) < 2 - (len(before) > 0):
            raise DataError(f"{source.name}: too short to evaluate: it needs at least 2 tokens")
        text = _Joined(before, encoded.ids, context_tails(len(before), adapt_config, cache_config), Path(tmp))
        static = _static_pass(model, text, batch_size=batch_size, bptt=bptt, device=device)
        cached = _cached_pass(model, text, cache_config, bptt=bptt, device=device) if cache_config else None
        adapted = (
            _adapted_pass(model, text, adapt_config, cache_config, device=device, on_progress=on_progress)
            if adapt_config else None
        )
        n_tokens, n_context, unknown, stats = len(encoded.ids), len(before), encoded.unknown, encoded.stats
        del encoded, before, text  # close the memory maps before the directory goes

    def per_unit(loss: float) -> tuple[float, float]:
        total_bits = loss * n_tokens / math.log(2)
        return total_bits / stats.chars, total_bits / stats.bytes

    loss = static.mean
    return EvalReport(
        tokens=n_tokens,
        chars=stats.chars,
        bytes=stats.bytes,
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_char=per_unit(loss)[0],
        bits_per_byte=per_unit(loss)[1],
        unknown=unknown,
        replacements=stats.replacements,
        seconds=static.seconds,
        adapted=None if adapted is None else adapted.adapted_score(per_unit, adapt_config),
        cached=None if cached is None else cached.cached_score(per_unit, cached.mean, cached.seconds),
        context_tokens=n_context,
    )


class _Joined:
    """The text after a context: one memory-mapped file holds the longest tail any pass reads
    (``context_tails``) and the text, and each pass starts where its own tail does."""

    def __init__(self, before: np.ndarray, ids: np.ndarray, tails: dict[str, int], tmp: Path) -> None:
        self.tails, self.longest = tails, max(tails.values())
        self.every = _concatenate(before[len(before) - self.longest :], ids, tmp / "joined") if self.longest else ids

    def part(self, name: str) -> tuple[np.ndarray, int]:
        """The text after the context tail of pass ``name``, and how long that tail is."""
        return self.every[self.longest - self.tails[name] :], self.tails[name]


@dataclass
class _Pass:
    """What one pass over the text measured."""

    nll_sum: float  # nats, over the scored tokens
    scored: int
    seconds: float
    cache: NeuralCache | None = None  # the cache it read with
    cached_sum: float | None = None  # the adapting pass with a cache: nats with the cache mixed in
    tuned: tuple[float, float] | None = None  # the adapting pass: lr and decay at the end
    primed: bool = False  # the adapting pass: whether the training's mean squares were its prior

    @property
    def mean(self) -> float:
        return self.nll_sum / self.scored

    def cached_score(self, per_unit, loss: float, seconds: float) -> CachedScore:
        return CachedScore(loss, *per_unit(loss), seconds, self.cache.size, self.cache.theta, self.cache.lambda_)

    def adapted_score(self, per_unit, config: AdaptConfig) -> AdaptedScore:
        score = AdaptedScore(self.mean, *per_unit(self.mean), self.seconds, **config.to_dict())
        score.tuned_lr, score.tuned_decay = self.tuned
        if not self.primed:
            score.adapt_prior = 0
        if self.cache is not None:  # rode on this pass: no seconds of its own
            score.cached = self.cached_score(per_unit, self.cached_sum / self.scored, 0.0)
        return score


def _static_pass(model, text: _Joined, *, batch_size: int, bptt: int, device) -> _Pass:
    started = time.perf_counter()
    ids, skip = text.part("static")
    nll_sum, scored = stream_loss(model, ids, batch_size=batch_size, bptt=bptt, device=device, skip=skip)
    return _Pass(nll_sum, scored, time.perf_counter() - started)


def _cached_pass(model, text: _Joined, config: CacheConfig, *, bptt: int, device) -> _Pass:
    """The text as one stream with the neural cache, static weights."""
    started = time.perf_counter()
    ids, skip = text.part("cached")
    nll_sum, scored, cache = cached_stream_loss(model, ids, config, bptt=bptt, device=device, skip=skip)
    return _Pass(nll_sum, scored, time.perf_counter() - started, cache)


def _adapted_pass(model, text: _Joined, config: AdaptConfig, cache_config: CacheConfig | None, *, device,
                  on_progress=None) -> _Pass:
    """Dynamic evaluation (changes ``model``'s weights), with the cache too when there is one;
    the context's last ``CONTEXT_ADAPT_TOKENS`` are learnt from first."""
    started = time.perf_counter()
    cache = NeuralCache(cache_config, device, vocab_size=model.config.vocab_size) if cache_config is not None else None
    ids, skip = text.part("adapted")
    # The context before the part learnt from (and the warm-up before that) is only remembered by
    # the cache, with the trained weights: its states are read in parallel parts, as the cached pass reads.
    read = max(0, skip - CONTEXT_ADAPT_TOKENS - WARMUP_TOKENS) if cache is not None else 0
    if read > 1:
        remember_read(cache, model, ids[: read + 1], device)
        ids, skip = ids[read:], skip - read
    step = model_step(model, config)
    results = adapt(model, ids, config, device, on_progress, cache=cache, skip=skip, learn=CONTEXT_ADAPT_TOKENS,
                    step=step)
    cached_sum = results[2] if cache is not None else None
    tuned = (step.tuning.lr, step.tuning.decay)
    return _Pass(results[0], results[1], time.perf_counter() - started, cache, cached_sum, tuned, step.primed)


def context_tails(available: int, adapt_config: AdaptConfig | None, cache_config: CacheConfig | None) -> dict[str, int]:
    """How many of a context's last tokens each pass of ``evaluate_source`` reads (of the
    ``available``): the warm-up for the static pass, the cache's window for the cached pass, the
    larger of the window and ``CONTEXT_ADAPT_TOKENS`` for the adapting pass."""
    window = cache_config.cache_size if cache_config is not None else 0
    wanted = {"static": 0, "cached": window, "adapted": max(CONTEXT_ADAPT_TOKENS, window) if adapt_config else 0}
    return {part: min(available, n + WARMUP_TOKENS) if available else 0 for part, n in wanted.items()}


def _concatenate(first: np.ndarray, second: np.ndarray, path: Path) -> np.ndarray:
    """``first`` then ``second`` in a new memory-mapped file, copied a chunk at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=second.dtype, shape=(len(first) + len(second),))
    out[: len(first)] = first
    for start in range(0, len(second), 1 << 22):
        out[len(first) + start : len(first) + start + (1 << 22)] = second[start : start + (1 << 22)]
    out.flush()
    return out


def evaluate_text(model, tokenizer, text: str, *, batch_size: int, bptt: int, device) -> EvalReport:
    """``evaluate_source`` for a text in memory."""
    return evaluate_source(
        model, tokenizer, TextSource.from_text(text), batch_size=batch_size, bptt=bptt, device=device
    )
