"""The ``.clstm`` file: a header, the side channel and the coded words, with a checksum.

    MAGIC (8 bytes)  version (u16, 2)  header length (u16)
    header: model, probe and original digests (8 bytes each)  the other settings (JSON, raw deflate)
    side channel (header["side"] bytes)  coded words (u32 each, to the CRC)  CRC-32 (u32)

All integers little-endian. The CRC-32 covers everything before it, so a damaged or truncated
file is caught before any work; the header's SHA-256 of the original bytes is checked after
decoding, before anything is written. Format 1 (still read) had a u32 header length and the
whole header as zlib'd JSON, with the number of words and of tokens per stream in it: 56-78
bytes more a file. The model is not in the file: the header names it by a
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
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<8sH")  # then the header's length: u32 in format 1, u16 from 2
_LENGTHS = {1: struct.Struct("<I"), 2: struct.Struct("<H")}
_DIGESTS = ("model", "probe", "sha256")  # format 2: raw, 8 bytes each, before the JSON
_DERIVED = ("part", "words")  # format 2: not stored (the tokens shared out; the bytes left for words)
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
        """Format 2's header."""
        record = asdict(self)
        digests = b"".join(bytes.fromhex(record.pop(key)) for key in _DIGESTS)
        for key in _DERIVED:
            del record[key]
        packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=_ZDICT2)
        settings = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return digests + packer.compress(settings) + packer.flush()


def digest(data: bytes) -> str:
    """The first 64 bits of ``data``'s SHA-256, in hex: how the header names the original and a context."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX]


# zlib's preset dictionary for format 1's header: its keys and common values, so that a header costs
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


# Format 2's preset dictionary: the settings as they usually are, the likeliest last (deflate
# finds the nearest copy cheapest). Part of the format: never change it without a new FORMAT_VERSION.
_ZDICT2 = (
    b'"tokenizer":"unigram","tokenizer":"bpe","tokenizer":"byte","weights":"int8","weights":"bf16",'
    b'"kernels":"DEFAULT","kernels":"AVX2","cache_size":20000,"cache_size":150000,'
    b'{"adapt":{"adapt_bptt":64,"adapt_decay":0.01,"adapt_depth":4,"adapt_lr":0.002,'
    b'"adapt_method":"rms","adapt_tune":0.3},'
    b'"cache":{"cache_lambda":null,"cache_size":2000,"cache_theta":null},"coder":"0.5.0","context":"'
    b'{"adapt":null,"cache":null,"coder":"0.5.0","context":null,"kernels":"AVX512","length":1'
    b',"side":0,"streams":1,"threads":2,"tokenizer":"char","tokens":1,"torch":"2.13.0+cpu","vocab_size":1'
    b',"weights":"fp32"}'
)


def write(header: Header, side: bytes, words: np.ndarray) -> bytes:
    """The whole file as bytes."""
    meta = header.to_bytes()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION) + _LENGTHS[FORMAT_VERSION].pack(len(meta)) + meta + side
    body += words.astype("<u4").tobytes()
    return body + _CRC.pack(zlib.crc32(body))


def read(data: bytes, name: str = "the file") -> tuple[Header, bytes, np.ndarray]:
    """The header, the side channel and the coded words of a file's bytes; anything wrong with
    them is one ``CompressedFileError`` that names ``name``."""
    if len(data) < _PREFIX.size + _CRC.size or not data.startswith(MAGIC):
        raise CompressedFileError(f"{name}: not a file charlstm compress wrote")
    _, version = _PREFIX.unpack_from(data)
    intact = zlib.crc32(data[: -_CRC.size]) == _CRC.unpack_from(data, len(data) - _CRC.size)[0]
    if version > FORMAT_VERSION:
        raise CompressedFileError(
            f"{name}: made by a newer charlstm (format {version}; this one reads up to {FORMAT_VERSION}): "
            "upgrade charlstm to decompress it"
        )
    if not intact or version not in _LENGTHS or len(data) < _PREFIX.size + _LENGTHS[version].size + _CRC.size:
        raise CompressedFileError(f"{name}: damaged or truncated (its checksum does not match); nothing written")
    (meta_size,) = _LENGTHS[version].unpack_from(data, _PREFIX.size)
    start = _PREFIX.size + _LENGTHS[version].size
    raw = data[start : start + meta_size] if meta_size <= MAX_HEADER_BYTES else b""
    after = len(data) - start - meta_size - _CRC.size  # side channel and words
    header = _header_v1(raw, name) if version == 1 else _header_v2(raw, after, name)
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


def _damaged(name: str) -> CompressedFileError:
    return CompressedFileError(f"{name}: damaged (its header cannot be read); nothing written")


def _header_v1(raw: bytes, name: str) -> Header:
    try:
        record = json.loads(zlib.decompressobj(zdict=_ZDICT).decompress(raw, MAX_HEADER_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, zlib.error):
        raise _damaged(name) from None
    return _header(record, name)


def _header_v2(raw: bytes, after: int, name: str) -> Header:
    """Format 2's header; ``after``: the bytes of side channel and words that follow it."""
    size = 8 * len(_DIGESTS)
    try:
        record = json.loads(
            zlib.decompressobj(-15, zdict=_ZDICT2).decompress(raw[size:], MAX_HEADER_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, zlib.error):
        raise _damaged(name) from None
    if len(raw) < size or not isinstance(record, dict) or not isinstance(record.get("side"), int):
        raise _damaged(name)
    record.update({key: raw[8 * k : 8 * k + 8].hex() for k, key in enumerate(_DIGESTS)})
    streams, tokens = record.get("streams"), record.get("tokens")
    if type(streams) is not int or type(tokens) is not int or streams < 1 or (after - record["side"]) % 4:
        raise _damaged(name)
    record.update(part=-(-tokens // streams), words=(after - record["side"]) // 4)
    return _header(record, name)


def _header(record, name: str) -> Header:
    """``record`` checked field by field (a file's header is hostile until checked)."""
    damaged = _damaged(name)
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
