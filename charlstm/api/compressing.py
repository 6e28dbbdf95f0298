"""What ``Model`` compresses: ``compress`` and ``decompress`` (``charlstm compress``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

from dataclasses import asdict, dataclass
from pathlib import Path

from charlstm.api.sources import PathLike
from charlstm.config import reading_configs
from charlstm.errors import CharlstmError, ConfigError


@dataclass(frozen=True)
class CompressedFile:
    """What a ``.clstm`` file's header says (``read_compressed``; ``charlstm info FILE.clstm``),
    read without the model. Digests are hex: the first bytes of each SHA-256 that the file keeps."""

    name: str
    format: int  # the file's format version
    size: int  # bytes of the file
    length: int  # bytes of the original
    bits_per_byte: float  # 8 * size / length (0 for an empty original)
    tokens: int
    model: str  # digest of the model that coded it (its weights, configuration and vocabulary)
    weights: str  # fp32, int8 or bf16
    adapt: dict | None  # --adapt's settings, or None
    cache: dict | None  # the cache's settings, or None
    context: str | None  # digest of the --context text, or None
    streams: int
    threads: int
    torch: str
    kernels: str
    coder: str  # constriction's version
    side: int  # bytes of the side channel (what the vocabulary cannot spell)

    def to_dict(self) -> dict:
        return asdict(self)


def read_compressed(source: bytes | PathLike, name: str | None = None) -> CompressedFile:
    """The header of a ``.clstm`` file (a path, or its bytes), checked as ``decompress`` checks
    it before decoding (a damaged, truncated or newer file is one ``CharlstmError``); no model
    is needed."""
    from charlstm.compression import format as fmt

    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "the file"
    else:
        name = name or str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise CharlstmError(f"{name}: cannot read ({e.strerror})") from None
    h = fmt.read(data, name)[0]
    return CompressedFile(
        name=name, format=h.version, size=len(data), length=h.length,
        bits_per_byte=8 * len(data) / h.length if h.length else 0.0, tokens=h.tokens, model=h.model,
        weights=h.weights, adapt=h.adapt, cache=h.cache, context=h.context, streams=h.streams, threads=h.threads,
        torch=h.torch, kernels=h.kernels, coder=h.coder, side=h.side,
    )


def context_bytes(context: bytes | PathLike | Sequence[PathLike] | None) -> bytes | None:
    """``--context``: bytes as they are, or FILE arguments read as ``eval --context`` reads them
    (files, directories, quoted patterns), as UTF-8."""
    if context is None or isinstance(context, bytes):
        return context
    from charlstm.api.sources import text_source

    return text_source(context).read().encode("utf-8")


class Compressing:
    """The compressing half of ``Model`` (which sets ``module``, ``tokenizer`` and ``weights``)."""

    def _cpu_module(self):
        """The model on the CPU (the probabilities are computed there, whatever ``load`` chose)."""
        return self.module if self.module.head.weight.device.type == "cpu" else copy.deepcopy(self.module).cpu()

    def compress(
        self,
        data: bytes,
        *,
        adapt: bool = False,
        adapt_method: str | None = None,
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        adapt_bptt: int | None = None,
        adapt_depth: int | None = None,
        adapt_tune: float | None = None,
        adapt_prior: int | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        context: bytes | PathLike | Sequence[PathLike] | None = None,
        streams: int | None = None,
        threads: int = 2,
        weights: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> bytes:
        """``data`` (any bytes) coded with this model, as ``charlstm compress`` writes it: the bytes
        of a ``.clstm`` file, which ``decompress`` with this same model turns back into ``data``
        exactly. ``adapt`` (and ``adapt_*``), ``cache_*`` and ``context`` (bytes, or files read as
        ``eval --context`` reads them) as ``evaluate`` takes them; ``streams``: how many parts are
        coded side by side (None: from the length); ``threads``: torch's compute threads, recorded
        in the file; ``weights``: as in ``load`` (None and ``load``'s None: int8 without ``adapt`` where
        PyTorch has its quantized kernels, else fp32). The model's weights are left as they are."""
        from charlstm.compression.coder import compress
        from charlstm.compression.settings import CompressConfig

        adapt_config, cache = reading_configs(adapt, cache_size, cache_theta, cache_lambda, adapt_method=adapt_method,
                                              adapt_lr=adapt_lr, adapt_decay=adapt_decay, adapt_bptt=adapt_bptt,
                                              adapt_depth=adapt_depth, adapt_tune=adapt_tune,
                                              adapt_prior=adapt_prior)
        config = CompressConfig(streams=streams, threads=threads, weights=weights or self.weights, adapt=adapt)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigError("compress takes bytes (for a str: text.encode())")
        return compress(self._cpu_module(), self.tokenizer, bytes(data), config, adapt=adapt_config,
                        cache=cache, context=context_bytes(context), on_progress=on_progress)

    def decompress(
        self,
        data: bytes,
        *,
        context: bytes | PathLike | Sequence[PathLike] | None = None,
        name: str = "the file",
        on_progress: Callable[[int], None] | None = None,
    ) -> bytes:
        """The original bytes of ``data`` (what ``compress`` made with this model), decoded with the
        settings its header records and checked against its checksum. ``context``: the same one
        ``compress`` was given. Anything that keeps it from being decoded exactly (another model,
        a damaged, truncated or newer file, a machine that computes other probabilities) is one
        ``CharlstmError`` naming ``name``."""
        from charlstm.compression.coder import decompress

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConfigError("decompress takes bytes")
        return decompress(self._cpu_module(), self.tokenizer, bytes(data), context=context_bytes(context),
                          name=name, on_progress=on_progress)
