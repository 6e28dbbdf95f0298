"""The ``.clstm`` file: a header, the side channel and the coded words, with a checksum.

    MAGIC (8 bytes)  version (u16)  header length (u32)  header (JSON, UTF-8, zlib)
    side channel (header["side"] bytes)  coded words (header["words"] x u32)  CRC-32 (u32)

All integers little-endian. The CRC-32 covers everything before it, so a damaged or truncated
file is caught before any work; the header's SHA-256 of the original bytes is checked after
decoding, before anything is written. The model is not in the file: the header names it by a
digest of its weights, configuration and vocabulary, and records every setting that changes the
probabilities (``Header``), so a file is decoded with exactly what coded it, or refused.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import asdict, dataclass, fields

import numpy as np

from charlstm.errors import CompressedFileError

MAGIC = b"CLSTM\r\n\x1a"  # a text transfer that changes line ends breaks it visibly (as PNG's)
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
_CRC = struct.Struct("<I")
MAX_HEADER_BYTES = 1 << 20
DIGEST_HEX = 16  # every digest in the header: 64 bits tell models, contexts and originals apart well enough,
# and a 1.5 KB file (a log coded at 0.36 bits per byte) paid 2% for the 128 bits of each before


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the model: every setting that changes the probabilities, the
    machine that computed them, and what the original was."""

    model: str  # SHA-256 of the weights, the model configuration and the token table
    tokenizer: str  # char, byte, bpe or unigram
    vocab_size: int
    weights: str  # fp32, int8 or bf16: how the recurrent products were computed
    adapt: dict | None  # AdaptConfig's fields, or None without --adapt
    cache: dict | None  # CacheConfig's fields, or None without a cache
    context: str | None  # SHA-256 of the context's text (its first 64 bits, as every digest here), or None
    streams: int  # B, stepped in lockstep
    part: int  # tokens per stream (the last may have fewer)
    tokens: int  # tokens coded
    threads: int  # torch.set_num_threads on both sides
    torch: str  # torch.__version__
    kernels: str  # torch.backends.cpu.get_cpu_capability()
    coder: str  # constriction's version (its quantisation is part of the code)
    probe: str  # SHA-256 of the probabilities of a short fixed run through the same path
    length: int  # bytes of the original
    sha256: str  # of the original (its first 128 bits)
    side: int  # bytes of the side channel
    words: int  # u32 words of the coded stream

    def to_bytes(self) -> bytes:
        packer = zlib.compressobj(9, zdict=_ZDICT)
        return packer.compress(json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode("utf-8")) + packer.flush()


def digest(data: bytes) -> str:
    """The first 64 bits of ``data``'s SHA-256, in hex: how the header names the original and a context."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX]


# zlib's preset dictionary for the header: its keys and common values, so that a header costs
# about 100 bytes instead of about 280 (every file pays it: 0.8% of 100 KB coded at 2.4 bits per
# byte). Part of the format: never change it without a new FORMAT_VERSION.
_ZDICT = (
    b'{"adapt":{"adapt_bptt":64,"adapt_decay":0.01,"adapt_lr":0.002,"adapt_method":"rms"},'
    b'"cache":{"cache_lambda":null,"cache_size":150000,"cache_theta":null},"coder":"0.5.0","context":null,'
    b'"kernels":"AVX512","kernels":"AVX2","kernels":"DEFAULT","length":,"model":"","part":,"probe":"","sha256":"",'
    b'"side":0,"streams":,"threads":2,"tokenizer":"byte","tokenizer":"unigram","tokenizer":"bpe","tokenizer":"char",'
    b'"tokens":,"torch":"2.13.0+cpu","vocab_size":,"weights":"int8","weights":"bf16","weights":"fp32","words":}'
)


def model_digest(model, tokenizer) -> str:
    """SHA-256 of what decides the probabilities: every weight's name, dtype, shape and bytes, the
    model configuration and the token table."""
    from charlstm.runs.digest import tensor_bytes

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
        h.update(tensor_bytes(tensor))
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for piece in tokenizer.token_bytes():
        h.update(struct.pack("<I", len(piece)) + piece)
    return h.hexdigest()[:DIGEST_HEX]


def write(header: Header, side: bytes, words: np.ndarray) -> bytes:
    """The whole file as bytes."""
    meta = header.to_bytes()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(meta)) + meta + side + words.astype("<u4").tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def read(data: bytes, name: str = "the file") -> tuple[Header, bytes, np.ndarray]:
    """The header, the side channel and the coded words of a file's bytes; anything wrong with
    them is one ``CompressedFileError`` that names ``name``."""
    if len(data) < _PREFIX.size + _CRC.size or not data.startswith(MAGIC):
        raise CompressedFileError(f"{name}: not a file charlstm compress wrote")
    _, version, meta_size = _PREFIX.unpack_from(data)
    intact = zlib.crc32(data[: -_CRC.size]) == _CRC.unpack_from(data, len(data) - _CRC.size)[0]
    if version > FORMAT_VERSION:
        raise CompressedFileError(
            f"{name}: made by a newer charlstm (format {version}; this one reads up to {FORMAT_VERSION}): "
            "upgrade charlstm to decompress it"
        )
    if not intact:
        raise CompressedFileError(f"{name}: damaged or truncated (its checksum does not match); nothing written")
    start = _PREFIX.size
    header = _header(data[start : start + meta_size] if meta_size <= MAX_HEADER_BYTES else b"", name)
    side_at = start + meta_size
    words_at = side_at + header.side
    if words_at + 4 * header.words + _CRC.size != len(data):
        raise CompressedFileError(f"{name}: damaged (its parts do not add up to its size); nothing written")
    words = np.frombuffer(data, dtype="<u4", count=header.words, offset=words_at).astype(np.uint32)
    return header, data[side_at:words_at], words


# Each header field's type, and the checks a value from a file must pass before it is used.
_TYPES = {f.name: f.type for f in fields(Header)}
_LIMITS = {"vocab_size": (1, 1 << 24), "streams": (1, 1 << 16), "part": (0, 1 << 40), "tokens": (0, 1 << 40),
           "threads": (1, 1024), "length": (0, 1 << 44), "side": (0, 1 << 44), "words": (0, 1 << 42)}


def _header(raw: bytes, name: str) -> Header:
    damaged = CompressedFileError(f"{name}: damaged (its header cannot be read); nothing written")
    try:
        record = json.loads(zlib.decompressobj(zdict=_ZDICT).decompress(raw, MAX_HEADER_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, zlib.error):
        raise damaged from None
    if not isinstance(record, dict) or set(record) != set(_TYPES):
        raise damaged
    for key, kind in _TYPES.items():
        value = record[key]
        if kind == "int":
            low, high = _LIMITS.get(key, (0, 1 << 62))
            if type(value) is not int or not low <= value <= high:
                raise damaged
        elif kind == "str" and not isinstance(value, str):
            raise damaged
        elif kind.startswith("dict") and not (value is None or isinstance(value, dict)):
            raise damaged
        elif kind.startswith("str |") and not (value is None or isinstance(value, str)):
            raise damaged
    header = Header(**record)
    if header.tokens > header.length or header.part != -(-header.tokens // header.streams):
        raise damaged  # a part is the tokens shared out; every token spells at least one byte
    return header
