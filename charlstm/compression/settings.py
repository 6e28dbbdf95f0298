"""``CompressConfig``: the compressor's own settings (dynamic evaluation and the cache keep theirs,
``AdaptConfig`` and ``CacheConfig``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from charlstm.config import WEIGHTS, flag, setting
from charlstm.errors import ConfigError

# Streams: each part at least this many tokens (a stream starts cold and pays for it: measured in
# docs/compressing.md), and never more than MAX_STREAMS streams; but a short text gets up to
# SHORT_STREAMS streams of SHORT_PART_TOKENS: a step costs about the same for 5 streams as for 11
# (one read of the weights), and a 24 KB text coded at 60-70 KB/s as 11 streams against 40-46 as
# 5, 0.07% larger (100 KB of Python as 48 streams instead of 24: 0.37% larger). With int8 products
# a 24 KB text coded at 40-49 KB/s as 11 streams and 65 as 16, 0.05% larger.
MIN_PART_TOKENS = 4096
SHORT_PART_TOKENS = 1536
SHORT_STREAMS = 16
# With a cache a stream's cold start costs far more: it lacks the text just before its part, which
# is what the cache copies from. A 34 KB dpkg log (--adapt --cache-size 150000 --context TRAIN)
# coded 17% above eval's figure as 8 streams, 8.6% as 4, 3.4% as 2 (the header apart); and every
# step reads the whole cache (about 6 ms for 150,000 states), whatever B is.
MIN_CACHE_PART_TOKENS = 16384
# With --adapt alone far more: every step of the weights learns from all B streams at once, from B
# places in the text, instead of from the text just read. 100 KB of Python (--adapt) coded at 1.364
# bits per byte as 1 stream (eval --adapt: 1.352), 1.416 as 4, 1.513 as 24, in 29.8, 21.9 and 18.2 s.
# With a cache too, the cache's parts: every step's read of the whole cache sets the pace there, and
# one stream would take about 6 ms a token.
MIN_ADAPT_PART_TOKENS = 1 << 16
MAX_STREAMS = 64
DEFAULT_THREADS = 2


@dataclass
class CompressConfig:
    """How ``charlstm compress`` codes a file; all of it goes into the file's header."""

    streams: int | None = setting(
        None,
        f"Streams coded side by side (faster; each starts cold, which costs a few bits) [default: from "
        f"the text's length: parts of at least {MIN_PART_TOKENS} tokens (a short text up to {SHORT_STREAMS} "
        f"streams of {SHORT_PART_TOKENS}; {MIN_ADAPT_PART_TOKENS} with --adapt, "
        f"{MIN_CACHE_PART_TOKENS} with a cache), "
        f"at most {MAX_STREAMS} streams].",
    )
    threads: int = setting(
        DEFAULT_THREADS,
        "Compute threads, recorded in the file and used again to decompress it (the floats depend on it).",
    )
    weights: str | None = setting(
        None,
        "Recurrent weights for the probabilities: fp32 as trained; int8 (faster, about 0.05% larger) or "
        "bf16 [default: int8 where PyTorch has its quantized kernels, else fp32; fp32 with --adapt].",
        choices=WEIGHTS,
    )
    adapt: bool = setting(
        False,
        "Dynamic evaluation: the weights keep learning from the text already coded (smaller, slower); "
        "decompressing does the same.",
    )

    def __post_init__(self) -> None:
        if self.weights is None:
            self.weights = default_weights(self.adapt)
        problems = []
        if self.streams is not None and not 1 <= self.streams <= 1 << 16:
            problems.append(f"{flag('streams')} must be in [1, 65536] (got {self.streams})")
        if not 1 <= self.threads <= 1024:
            problems.append(f"{flag('threads')} must be in [1, 1024] (got {self.threads})")
        if self.weights not in WEIGHTS:
            problems.append(f"{flag('weights')} must be one of {', '.join(WEIGHTS)} (got {self.weights!r})")
        if problems:
            raise ConfigError("; ".join(problems))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


def default_weights(adapt: bool) -> str:
    """``--weights`` when not given: int8 products without ``--adapt`` (the recurrent product is
    most of a step's work, and int8's runs in about half fp32's time: the five texts of
    ``bench_compress.py`` coded at 62-91 KB/s against fp32's 43-84, files 0-0.05% larger), fp32 with
    it (the weights change every window, so they would be quantised again every window, and
    learning, not stepping, sets the pace)."""
    from charlstm.products import int8_available

    return "int8" if not adapt and int8_available() else "fp32"


def layout(tokens: int, streams: int | None, cache: bool = False, adapt: bool = False) -> tuple[int, int]:
    """(B, part): how many streams and how many tokens each (the last may have fewer, never none);
    ``cache``, ``adapt``: whether a neural cache is mixed in, whether the weights learn (longer
    parts by default)."""
    if tokens == 0:
        return 1, 0
    least = MIN_CACHE_PART_TOKENS if cache else MIN_ADAPT_PART_TOKENS if adapt else MIN_PART_TOKENS
    wanted = tokens // least
    if not (cache or adapt):
        wanted = max(wanted, min(SHORT_STREAMS, tokens // SHORT_PART_TOKENS))
    wanted = streams if streams is not None else min(MAX_STREAMS, max(1, wanted))
    part = math.ceil(tokens / min(wanted, tokens))
    return math.ceil(tokens / part), part
