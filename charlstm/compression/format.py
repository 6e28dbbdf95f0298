"""The ``.clstm`` file: a header, the side channel and the coded words, with a check.

Format 4, what charlstm writes (all integers little-endian; varint: 7 bits a byte, low first):

    MAGIC3 (3 bytes)  version (u8, 4)
    digests: the model's (4 bytes), the probe's (2) and the original's (4): each SHA-256's first bytes
    flags (u8)  the original's bytes, tokens, streams, side-channel bytes (varints)
    [flags & CONTEXT: the context's digest (4)]  [flags & CACHE: the cache's size (varint)]
    [flags & SETTINGS: length (varint), then JSON of the settings not as ``_USUAL``, raw deflate]
    side channel (raw deflate)  coded words (u32 each)  the CRC-32's low 16 bits (u16)

Format 3 is the same without the flag INT8 (``--weights int8``, the default of ``compress``
without ``--adapt`` from format 4).

A file codes what ``eval`` measures, and its frame (all but the words and side channel) is
21-25 bytes for the usual settings up to 2 MB: 1.4% of a 34 KB log coded at 0.43 bits per byte
(format 2's frame was 59-92 bytes, format 1's 121-161). Each check has the size of its job. The original's digest is the guard against a wrong file: 32 bits, as gzip's
CRC and zstd's checksum. The model's (32 bits), the probe's (16) and the CRC's (16) only refuse
early, before the decoding: what gets past one of them (one time in 65,536 for the 16-bit ones)
decodes into bytes the original's digest refuses, and nothing is written.

The model is not in the file: the header names it by a digest of its weights, configuration
and vocabulary (which hold its tokenizer), and records every setting that changes the
probabilities (``Header``), so a file is decoded with exactly what coded it, or refused.
Formats 1 and 2 (``MAGIC``, u16 version) are still read.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, fields

import numpy as np

from charlstm.errors import CompressedFileError

FORMAT_VERSION = 4
MAGIC3 = b"\x8cCL"  # from format 3; not text (a text transfer that changes bytes breaks it visibly)
MAGIC = b"CLSTM\r\n\x1a"  # formats 1 and 2, then a u16 version and the header's length
_PREFIX = struct.Struct("<8sH")
_LENGTHS = {1: struct.Struct("<I"), 2: struct.Struct("<H")}
_DIGESTS = ("model", "probe", "sha256")  # format 2: raw, 8 bytes each, before the JSON
_CRC = struct.Struct("<I")  # formats 1 and 2: the whole CRC-32
_CRC3 = struct.Struct("<H")  # format 3: its low 16 bits
_DIGEST_BYTES3 = {"model": 4, "probe": 2, "sha256": 4}
MAX_HEADER_BYTES = 1 << 20

# Format 3's flags, and what a file holds when a flag is clear.
_ADAPTED = 1  # --adapt, with _ADAPT3's settings
_CONTEXT = 2  # a context's digest follows (4 bytes)
_CACHE = 4  # a cache whose size follows; lambda and theta chosen as the text is read
_SETTINGS = 8  # the settings not as _USUAL follow, as JSON
_INT8 = 16  # format 4: --weights int8
_USUAL = {"weights": "fp32", "adapt": None, "cache": None, "context": None, "threads": 2,
          "torch": "2.13.0+cpu", "kernels": "AVX512", "coder": "0.5.0"}
_ADAPT3 = {"adapt_bptt": 64, "adapt_decay": 0.01, "adapt_depth": 4, "adapt_lr": 0.002, "adapt_method": "rms",
           "adapt_prior": 300, "adapt_tune": 0.5}  # part of the format, as _USUAL: never change either without a new version


@dataclass(frozen=True)
class Header:
    """What a decoder needs besides the model: every setting that changes the probabilities, the
    machine that computed them, and what the original was. A digest is hex: all of it as
    computed, or the first bytes a file kept."""

    version: int  # the file's format
    model: str  # SHA-256 of the weights, the model configuration and the token table
    weights: str  # fp32, int8 or bf16: how the recurrent products were computed
    adapt: dict | None  # AdaptConfig's fields, or None without --adapt
    cache: dict | None  # CacheConfig's fields, or None without a cache
    context: str | None  # SHA-256 of the context's text, or None
    streams: int  # B, stepped in lockstep
    part: int  # tokens per stream (the last may have fewer)
    tokens: int  # tokens coded
    threads: int  # torch.set_num_threads on both sides
    torch: str  # torch.__version__
    kernels: str  # torch.backends.cpu.get_cpu_capability()
    coder: str  # constriction's version (its quantisation is part of the code)
    probe: str  # SHA-256 of the probabilities of a short fixed run through the same path
    length: int  # bytes of the original
    sha256: str  # of the original
    side: int  # bytes of the side channel
    words: int  # u32 words of the coded stream

    def to_bytes(self) -> bytes:
        """Format 4's header: the magic and version to the JSON of settings."""
        flags, tail = 0, b""
        settings = {key: getattr(self, key) for key, usual in _USUAL.items() if getattr(self, key) != usual}
        if settings.get("weights") == "int8":
            flags |= _INT8
            del settings["weights"]
        if settings.get("adapt") == _ADAPT3:
            flags |= _ADAPTED
            del settings["adapt"]
        if "context" in settings:
            flags |= _CONTEXT
            tail += bytes.fromhex(settings.pop("context"))[:4]
        cache = settings.get("cache")
        if cache is not None and cache.get("cache_lambda") is None and cache.get("cache_theta") is None:
            flags |= _CACHE
            tail += varint(settings.pop("cache")["cache_size"])
        if settings:
            flags |= _SETTINGS
            packer = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=_ZDICT2)
            raw = json.dumps(settings, sort_keys=True, separators=(",", ":")).encode("utf-8")
            packed = packer.compress(raw) + packer.flush()
            tail += varint(len(packed)) + packed
        digests = b"".join(bytes.fromhex(getattr(self, key))[:n] for key, n in _DIGEST_BYTES3.items())
        counts = varint(self.length) + varint(self.tokens) + varint(self.streams) + varint(self.side)
        return MAGIC3 + bytes([FORMAT_VERSION]) + digests + bytes([flags]) + counts + tail


def digest(data: bytes) -> str:
    """``data``'s SHA-256 in hex: how the header names the original and a context (a file keeps
    its first bytes)."""
    return hashlib.sha256(data).hexdigest()


def same(computed: str, recorded: str) -> bool:
    """Whether a digest computed here is the one a file recorded (which may keep fewer bytes)."""
    return bool(recorded) and computed[: len(recorded)] == recorded


def varint(n: int) -> bytes:
    """``n`` >= 0 in 7 bits a byte, the low ones first; the high bit says more follow."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` and where the next thing starts; ``ValueError`` past the end or over 63 bits."""
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("not a varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        shift += 7
        if not byte & 0x80:
            return value, at


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
    return h.hexdigest()


# Format 2's preset dictionary, and format 3's for its settings: the settings as they usually are,
# the likeliest last (deflate finds the nearest copy cheapest). Part of the format: never change
# it without a new FORMAT_VERSION.
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
    """The whole file as bytes (format 4)."""
    body = header.to_bytes() + side + words.astype("<u4").tobytes()
    return body + _CRC3.pack(zlib.crc32(body) & 0xFFFF)


def read(data: bytes, name: str = "the file") -> tuple[Header, bytes, np.ndarray]:
    """The header, the side channel and the coded words of a file's bytes; anything wrong with
    them is one ``CompressedFileError`` that names ``name``."""
    if data.startswith(MAGIC3) and len(data) > len(MAGIC3):
        version, check, crc = data[len(MAGIC3)], _CRC3, zlib.crc32(data[: -_CRC3.size]) & 0xFFFF
    elif data.startswith(MAGIC) and len(data) >= _PREFIX.size:
        version, check, crc = _PREFIX.unpack_from(data)[1], _CRC, zlib.crc32(data[: -_CRC.size])
    else:
        raise CompressedFileError(f"{name}: not a file charlstm compress wrote")
    if version > FORMAT_VERSION:
        raise CompressedFileError(
            f"{name}: made by a newer charlstm (format {version}; this one reads up to {FORMAT_VERSION}): "
            "upgrade charlstm to decompress it"
        )
    intact = len(data) >= len(MAGIC3) + 1 + check.size and crc == check.unpack_from(data, len(data) - check.size)[0]
    if not intact or version not in (1, 2, 3, 4) or (version >= 3) != data.startswith(MAGIC3):
        raise CompressedFileError(f"{name}: damaged or truncated (its checksum does not match); nothing written")
    if version >= 3:
        header, side_at = _header_v3(data, version, name)
    else:
        header, side_at = _header_v12(data, version, name)
    words_at = side_at + header.side
    if words_at + 4 * header.words + check.size != len(data):
        raise CompressedFileError(f"{name}: damaged (its parts do not add up to its size); nothing written")
    words = np.frombuffer(data, dtype="<u4", count=header.words, offset=words_at).astype(np.uint32)
    return header, data[side_at:words_at], words


# Each header field's type, and the checks a value from a file must pass before it is used.
_TYPES = {f.name: f.type for f in fields(Header)}
_LIMITS = {"streams": (1, 1 << 16), "part": (0, 1 << 40), "tokens": (0, 1 << 40), "threads": (1, 1024),
           "length": (0, 1 << 44), "side": (0, 1 << 44), "words": (0, 1 << 42)}


def _damaged(name: str) -> CompressedFileError:
    return CompressedFileError(f"{name}: damaged (its header cannot be read); nothing written")


def _header_v3(data: bytes, version: int, name: str) -> tuple[Header, int]:
    """Format 3's or 4's header and where the side channel starts."""
    at = len(MAGIC3) + 1
    record = {"version": version, **_USUAL}
    try:
        for key, n in _DIGEST_BYTES3.items():
            if at + n > len(data):
                raise ValueError("short")
            record[key], at = data[at : at + n].hex(), at + n
        flags, at = data[at], at + 1
        for key in ("length", "tokens", "streams", "side"):
            record[key], at = read_varint(data, at)
        if flags & _INT8 and version >= 4:
            record["weights"] = "int8"
        if flags & _ADAPTED:
            record["adapt"] = dict(_ADAPT3)
        if flags & _CONTEXT:
            record["context"], at = data[at : at + 4].hex(), at + 4
        if flags & _CACHE:
            size, at = read_varint(data, at)
            record["cache"] = {"cache_lambda": None, "cache_size": size, "cache_theta": None}
        if flags & _SETTINGS:
            n, at = read_varint(data, at)
            unpacker = zlib.decompressobj(-15, zdict=_ZDICT2)
            settings = json.loads(unpacker.decompress(data[at : at + n], MAX_HEADER_BYTES).decode("utf-8"))
            if not isinstance(settings, dict) or not set(settings) <= set(_USUAL) - {"context"}:
                raise ValueError("not settings")
            record.update(settings)
            at += n
    except (IndexError, UnicodeDecodeError, ValueError, zlib.error):
        raise _damaged(name) from None
    last_flag = _INT8 if version >= 4 else _SETTINGS
    if flags >= 2 * last_flag or len(record["context"] or "00000000") != 8 or at > len(data) - _CRC3.size:
        raise _damaged(name)
    after = len(data) - at - _CRC3.size - record["side"]  # the words' bytes
    if record["streams"] < 1 or after < 0 or after % 4:
        raise _damaged(name)
    record.update(part=-(-record["tokens"] // record["streams"]), words=after // 4)
    return _header(record, name), at


def _header_v12(data: bytes, version: int, name: str) -> tuple[Header, int]:
    """Format 1's or 2's header and where the side channel starts."""
    if len(data) < _PREFIX.size + _LENGTHS[version].size + _CRC.size:
        raise _damaged(name)
    (meta_size,) = _LENGTHS[version].unpack_from(data, _PREFIX.size)
    start = _PREFIX.size + _LENGTHS[version].size
    raw = data[start : start + meta_size] if meta_size <= MAX_HEADER_BYTES else b""
    after = len(data) - start - meta_size - _CRC.size  # side channel and words
    record = _header_v1(raw, name) if version == 1 else _header_v2(raw, after, name)
    if not isinstance(record, dict):
        raise _damaged(name)
    for key in ("tokenizer", "vocab_size"):  # held by the model's digest; not kept from format 3
        record.pop(key, None)
    return _header({**record, "version": version}, name), start + meta_size


def _header_v1(raw: bytes, name: str):
    try:
        return json.loads(zlib.decompressobj(zdict=_ZDICT).decompress(raw, MAX_HEADER_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, zlib.error):
        raise _damaged(name) from None


def _header_v2(raw: bytes, after: int, name: str) -> dict:
    """Format 2's header fields; ``after``: the bytes of side channel and words that follow it."""
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
    return record


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
