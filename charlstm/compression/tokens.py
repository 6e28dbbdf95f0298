"""Any bytes as the model's tokens and back, exactly.

The model reads tokens; a file is bytes, and not always text. ``to_tokens`` turns bytes into
token ids whose bytes (``tokenizer.token_bytes()``) give back the file exactly, plus a side
channel for what the vocabulary cannot spell:

- a byte model spells every byte;
- a char model reads the bytes as UTF-8 with ``surrogateescape`` (an invalid byte becomes a
  character of its own); a character it lacks is its unknown token, and the side channel holds
  that character's bytes, in order;
- a SentencePiece model has byte pieces (byte fallback), so nothing is unknown.

Then the ids are checked: their bytes must be the file's. Where a tokenizer would change the text
(SentencePiece reads U+2581 as a space; a line holding an invalid byte cannot be given to it), the
line is spelt instead, as byte pieces, or as one unknown token whose bytes go to the side channel.
``from_tokens`` is the inverse and needs only the table of token bytes.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

from charlstm.compression.format import read_varint, varint
from charlstm.errors import CompressedFileError

SIDE_LEVEL = 9  # zlib's level for the side channel: it is small, and rarely there at all


def to_tokens(data: bytes, tokenizer) -> tuple[np.ndarray, list[bytes]]:
    """``data`` as token ids (int64) and the side channel's pieces (one per unknown token)."""
    table = tokenizer.token_bytes()
    if tokenizer.kind == "byte":
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64), []
    text = data.decode("utf-8", "surrogateescape")
    try:
        ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    except (UnicodeError, RuntimeError, ValueError, TypeError):  # a lone surrogate SentencePiece cannot take
        ids = None
    if ids is not None:
        side = []
        if tokenizer.unk_id is not None and tokenizer.kind == "char":  # one token per character
            side = [text[i].encode("utf-8", "surrogateescape") for i in np.flatnonzero(ids == tokenizer.unk_id)]
        if from_tokens(ids, side, table, tokenizer.unk_id) == data:
            return ids, side
    return _line_by_line(text, tokenizer, table)


def _line_by_line(text: str, tokenizer, table: list[bytes]) -> tuple[np.ndarray, list[bytes]]:
    """Each line encoded on its own and checked; a line that does not come back is spelt."""
    spelling = _byte_pieces(table)
    parts: list[np.ndarray] = []
    side: list[bytes] = []
    for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
        raw = line.encode("utf-8", "surrogateescape")
        try:
            ids = np.asarray(tokenizer.encode(line), dtype=np.int64)
        except (UnicodeError, RuntimeError, ValueError, TypeError):
            ids = None
        unknown = [] if ids is None or tokenizer.unk_id is None else list(np.flatnonzero(ids == tokenizer.unk_id))
        if ids is not None and not unknown and b"".join(table[i] for i in ids.tolist()) == raw:
            parts.append(ids)
        elif spelling is not None:
            parts.append(spelling[np.frombuffer(raw, dtype=np.uint8)])
        else:
            parts.append(np.array([tokenizer.unk_id], dtype=np.int64))
            side.append(raw)
    ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return ids, side


def _byte_pieces(table: list[bytes]) -> np.ndarray | None:
    """The id of each byte's own piece (SentencePiece's byte fallback), or None when some byte
    has none."""
    ids = {}
    for i, piece in enumerate(table):
        if len(piece) == 1:
            ids.setdefault(piece[0], i)
    if len(ids) < 256:
        return None
    return np.array([ids[b] for b in range(256)], dtype=np.int64)


def from_tokens(ids: np.ndarray, side: list[bytes], table: list[bytes], unk_id: int | None) -> bytes:
    """The bytes of ``ids``: each token's bytes from ``table``, each unknown token's (``unk_id``)
    from ``side``, in order."""
    if not side:
        return b"".join([table[i] for i in ids.tolist()])
    pieces = iter(side)
    return b"".join([next(pieces, b"") if i == unk_id else table[i] for i in ids.tolist()])


def pack_side(side: list[bytes]) -> bytes:
    """The side channel as bytes: each piece's length as a varint, then the pieces; raw deflate
    (formats 1 and 2: zlib's, 6 bytes more)."""
    if not side:
        return b""
    head = b"".join(varint(len(piece)) for piece in side)
    body = varint(len(side)) + head + b"".join(side)
    packer = zlib.compressobj(SIDE_LEVEL, zlib.DEFLATED, -15)
    return packer.compress(body) + packer.flush()


def unpack_side(blob: bytes, raw: bool = True) -> list[bytes]:
    """``pack_side``'s inverse (``raw``: raw deflate, as from format 3); a damaged channel is a
    ``CompressedFileError``."""
    if not blob:
        return []
    damaged = CompressedFileError("the side channel is damaged")
    try:
        unpacker = zlib.decompressobj(-15 if raw else 15)
        body = unpacker.decompress(blob)
        if not unpacker.eof or unpacker.unused_data:
            raise damaged
        count, at = read_varint(body, 0)
        if count > len(body):
            raise damaged
        lengths = []
        for _ in range(count):
            n, at = read_varint(body, at)
            lengths.append(n)
    except (zlib.error, ValueError):
        raise damaged from None
    if at + sum(lengths) != len(body):
        raise CompressedFileError("the side channel is damaged")
    side = []
    for n in lengths:
        side.append(body[at : at + n])
        at += n
    return side
