"""``CompressConfig``: the compressor's own settings (dynamic evaluation and the cache keep theirs,
``AdaptConfig`` and ``CacheConfig``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from charlstm.config import WEIGHTS, flag, setting
from charlstm.errors import ConfigError

# Streams: each part at least this many tokens (a stream starts cold and pays for it: measured in
# docs/compressing.md), and never more than this many streams.
MIN_PART_TOKENS = 4096
MAX_STREAMS = 64
DEFAULT_THREADS = 2


@dataclass
class CompressConfig:
    """How ``charlstm compress`` codes a file; all of it goes into the file's header."""

    streams: int | None = setting(
        None,
        f"Streams coded side by side (faster; each starts cold, which costs a few bits) [default: from "
        f"the text's length: parts of at least {MIN_PART_TOKENS} tokens, at most {MAX_STREAMS} streams].",
    )
    threads: int = setting(
        DEFAULT_THREADS,
        "Compute threads, recorded in the file and used again to decompress it (the floats depend on it).",
    )
    weights: str = setting(
        "fp32", "Recurrent weights for the probabilities: fp32 as trained; int8 or bf16 (faster, larger).",
        choices=WEIGHTS,
    )
    adapt: bool = setting(
        False,
        "Dynamic evaluation: the weights keep learning from the text already coded (smaller, slower); "
        "decompressing does the same.",
    )

    def __post_init__(self) -> None:
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


def layout(tokens: int, streams: int | None) -> tuple[int, int]:
    """(B, part): how many streams and how many tokens each (the last may have fewer, never none)."""
    if tokens == 0:
        return 1, 0
    wanted = streams if streams is not None else min(MAX_STREAMS, max(1, tokens // MIN_PART_TOKENS))
    part = math.ceil(tokens / min(wanted, tokens))
    return math.ceil(tokens / part), part
