"""Text files in, token streams out: safe reading, the train/validation split, and the
``(T, B)`` stream layout that truncated backpropagation through time walks over.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlstm.errors import DataError

BUILTIN_NAME = "the Python Language Reference (pydoc_data.topics, shipped with Python)"
BUILTIN_STEM = "python-reference"


def builtin_text() -> str:
    """The built-in corpus: the Python Language Reference topics every Python install carries."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key].strip("\n") for key in sorted(topics.topics)) + "\n"


# Files are read this many bytes at a time: memory stays flat whatever the file's size.
_READ_BYTES = 4 << 20
# With --encoding-errors replace, every invalid byte sequence becomes U+FFFD and is counted here.
_replacements = [0]


def _count_and_replace(error: UnicodeDecodeError):
    _replacements[0] += 1
    return "\ufffd", error.end


codecs.register_error("charlstm.replace", _count_and_replace)
ENCODING_ERRORS = {"strict": "strict", "replace": "charlstm.replace"}


@dataclass
class TextStats:
    """What one full pass over a text saw."""

    chars: int = 0
    bytes: int = 0  # UTF-8 bytes of the decoded text (a stripped BOM is not counted)
    replacements: int = 0  # invalid byte sequences replaced by U+FFFD (--encoding-errors replace)
    sha256: str = ""  # of the file's bytes (or the text's UTF-8), identifies the text for --resume


class TextSource:
    """A UTF-8 text read in chunks: a file (never held whole in memory) or an in-memory text.

    ``chunks()`` decodes and checks as it goes; anything that is not text is refused with the
    byte offset of the problem. ``stats`` is filled in by every complete pass. A UTF-8
    byte-order mark is dropped; line ends are kept exactly as they are.
    """

    def __init__(
        self,
        name: str,
        stem: str,
        path: str | os.PathLike | None = None,
        text: str | None = None,
        encoding_errors: str = "strict",
    ):
        if (path is None) == (text is None):
            raise ValueError("give exactly one of path and text")
        if encoding_errors not in ENCODING_ERRORS:
            raise ValueError(f"encoding_errors must be one of {sorted(ENCODING_ERRORS)}")
        self.name = name  # shown to the user: a path, or the built-in corpus's description
        self.stem = stem  # default run directory name
        self.path = None if path is None else Path(path)
        self.text = text
        self.encoding_errors = encoding_errors
        self.stats: TextStats | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, encoding_errors: str = "strict") -> TextSource:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        if path.is_dir():
            raise DataError(f"{path}: is a directory, not a text file")
        if not os.access(path, os.R_OK):
            raise DataError(f"{path}: cannot read (permission denied)")
        return cls(str(path), path.stem or "run", path=path, encoding_errors=encoding_errors)

    @classmethod
    def from_text(cls, text: str, name: str = "text", stem: str = "run") -> TextSource:
        return cls(name, stem, text=text)

    @classmethod
    def builtin(cls) -> TextSource:
        return cls(BUILTIN_NAME, BUILTIN_STEM, text=builtin_text())

    def size_hint(self) -> int:
        """About how many characters the text holds (a file's size in bytes)."""
        return len(self.text) if self.text is not None else self.path.stat().st_size

    def sha256(self) -> str:
        """SHA-256 of the file's bytes (or the text's UTF-8): what ``stats.sha256`` will be."""
        if self.text is not None:
            return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            return file_sha256(self.path)
        except OSError as e:
            raise DataError(f"{self.name}: cannot read ({e.strerror})") from None

    def read(self) -> str:
        """The whole text at once (for small texts)."""
        return "".join(self.chunks())

    def chunks(self):
        """The decoded text, in pieces of up to a few million characters."""
        if self.text is not None:
            yield from self._text_chunks()
        else:
            yield from self._file_chunks()

    def _text_chunks(self):
        text = self.text
        if not text.strip():
            raise DataError(f"{self.name}: the text is empty or only whitespace")
        stats = TextStats(chars=len(text))
        digest = hashlib.sha256()
        for start in range(0, len(text), _READ_BYTES):
            piece = text[start : start + _READ_BYTES]
            data = piece.encode("utf-8", "surrogatepass")
            digest.update(data)
            stats.bytes += len(data)
            yield piece
        stats.sha256 = digest.hexdigest()
        self.stats = stats

    def _file_chunks(self):
        name = self.name
        stats = TextStats()
        digest = hashlib.sha256()
        decoder = codecs.getincrementaldecoder("utf-8")(ENCODING_ERRORS[self.encoding_errors])
        replaced_before = _replacements[0]
        offset = 0  # bytes of the file consumed so far
        seen_text = False
        first = True
        try:
            f = open(self.path, "rb")
        except OSError as e:
            raise DataError(f"{name}: cannot read ({e.strerror})") from None
        with f:
            while True:
                try:
                    data = f.read(_READ_BYTES)
                except OSError as e:
                    raise DataError(f"{name}: cannot read ({e.strerror})") from None
                if first:
                    first = False
                    data = self._check_start(data, digest)
                    offset = len(codecs.BOM_UTF8) if self._had_bom else 0
                final = not data
                digest.update(data)
                nul = data.find(b"\x00")
                if nul != -1:
                    raise DataError(
                        f"{name}: looks binary (NUL byte at byte offset {offset + nul}); charlstm reads "
                        "UTF-8 text (convert UTF-16 files to UTF-8)"
                    )
                pending = decoder.getstate()[0]
                replaced = _replacements[0]
                try:
                    text = decoder.decode(data, final)
                except UnicodeDecodeError as e:
                    bad = (pending + data)[e.start]
                    raise DataError(
                        f"{name}: not valid UTF-8 (byte 0x{bad:02x} at byte offset "
                        f"{offset - len(pending) + e.start}); convert it to UTF-8, or pass "
                        "--encoding-errors replace to replace invalid bytes with U+FFFD"
                    ) from None
                offset += len(data)
                if _replacements[0] != replaced:  # U+FFFD is 3 bytes, whatever it replaced
                    stats.bytes += len(text.encode("utf-8", "surrogatepass"))
                else:  # valid UTF-8 decodes to exactly the bytes it came from
                    stats.bytes += len(pending) + len(data) - len(decoder.getstate()[0])
                if text:
                    seen_text = seen_text or not text.isspace()
                    stats.chars += len(text)
                    yield text
                if final:
                    break
        if not seen_text:
            raise DataError(f"{name}: the file holds only whitespace; give a text file with some content")
        stats.replacements = _replacements[0] - replaced_before
        stats.sha256 = digest.hexdigest()
        self.stats = stats

    def _check_start(self, data: bytes, digest) -> bytes:
        if not data:
            raise DataError(f"{self.name}: the file is empty; give a text file with some content")
        if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or data[:4] in (
            codecs.BOM_UTF32_LE,
            codecs.BOM_UTF32_BE,
        ):
            raise DataError(
                f"{self.name}: looks like UTF-16/UTF-32 or binary data, not UTF-8 text; convert it to UTF-8"
            )
        self._had_bom = data.startswith(codecs.BOM_UTF8)
        if self._had_bom:
            digest.update(codecs.BOM_UTF8)
        return data[len(codecs.BOM_UTF8) :] if self._had_bom else data


def read_text(path: str | os.PathLike, encoding_errors: str = "strict") -> str:
    """Read a whole UTF-8 text file, refusing anything that is not text (see ``TextSource``)."""
    return TextSource.from_file(path, encoding_errors).read()


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(_READ_BYTES):
            digest.update(data)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- token arrays


def token_dtype(vocab_size: int):
    """The smallest integer type torch can index with that holds every id."""
    return np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32768 else np.int32


@dataclass
class EncodedText:
    """A text's token ids in a file, opened as a memory map, with what encoding it saw."""

    ids: np.ndarray  # 1-D, memory-mapped
    stats: TextStats
    unknown: int  # ids that are the tokenizer's unknown symbol


def encode_to_file(source: TextSource, tokenizer, path: str | os.PathLike) -> EncodedText:
    """Encode ``source`` chunk by chunk into ``path`` (raw ids) and memory-map the result.

    Memory stays bounded by the chunk size, whatever the text's size. Char and byte ids are the
    same however the text is cut; for subwords the text is cut after a newline (no piece spans
    one, so the ids are those of the whole text), and a line longer than a chunk where it ends.
    """
    path = Path(path)
    dtype = token_dtype(tokenizer.vocab_size)
    count = unknown = 0
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tokens", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for piece in _encodable_pieces(source.chunks(), tokenizer.cuts_anywhere):
                ids = tokenizer.encode(piece).astype(dtype, copy=False)
                f.write(ids.tobytes())
                count += len(ids)
                if tokenizer.unk_id is not None:
                    unknown += int(np.count_nonzero(ids == tokenizer.unk_id))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return EncodedText(open_tokens(path, dtype, count), source.stats, unknown)


def _encodable_pieces(chunks, cuts_anywhere: bool):
    if cuts_anywhere:
        yield from chunks
        return
    carry = ""
    for chunk in chunks:
        carry += chunk
        cut = carry.rfind("\n") + 1
        if cut == 0:
            if len(carry) < _READ_BYTES:
                continue
            cut = len(carry)
        yield carry[:cut]
        carry = carry[cut:]
    if carry:
        yield carry


def open_tokens(path: str | os.PathLike, dtype, count: int) -> np.ndarray:
    """Memory-map a token file. Copy-on-write, so torch may wrap it; the file is never changed."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="c", shape=(count,))


def split_train_val(ids, val_fraction: float):
    """The last ``val_fraction`` of a token stream (or a text) is validation, the rest is training."""
    n_val = int(round(len(ids) * val_fraction))
    n_val = max(n_val, 2)
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def min_train_tokens(batch_size: int, bptt: int) -> int:
    """Tokens needed for one window of ``bptt`` inputs (and their targets) in every stream."""
    return batch_size * (bptt + 1)


def batchify(ids: np.ndarray, batch_size: int):
    """Lay a token stream out as ``batch_size`` parallel streams, one per column.

    Starting from the sequential data, the stream is cut into ``batch_size`` equal parts and
    each becomes a column; the remainder that does not fill a row is dropped. With the
    alphabet and batch_size 4:

        ┌ a g m s ┐
        │ b h n t │
        │ c i o u │
        │ d j p v │
        │ e k q w │
        └ f l r x ┘

    Column j continues from row to row, so the hidden state left at the bottom of one window is
    the right starting state for the top of the next. Returns a ``(T, B)`` tensor in the
    smallest integer type that holds the ids (uint8, int16 or int32, never int64); a memory-mapped
    array stays a view of its file, so a 1 GB corpus is not copied into memory. ``get_window``
    widens one window at a time.
    """
    import torch

    steps = len(ids) // batch_size
    ids = ids[: steps * batch_size]
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.dtype not in (np.uint8, np.int16, np.int32):
        ids = ids.astype(token_dtype(int(ids.max()) + 1 if len(ids) else 1))
    return torch.from_numpy(ids.reshape(batch_size, steps).T)  # (T, B), a view: no copy


@dataclass(frozen=True)
class Window:
    start: int
    length: int


class Windows(Sequence):
    """Consecutive ``bptt``-long windows over ``num_rows`` rows, made on demand (a 1 GB corpus has
    half a million of them). Each input row needs the next row as its target, so the windows
    cover rows ``0 .. num_rows - 2`` as inputs. Slicing gives the windows from a position on."""

    def __init__(self, num_rows: int, bptt: int, starts: range | None = None):
        self.num_rows, self.bptt = num_rows, bptt
        self._starts = range(0, num_rows - 1, bptt) if starts is None else starts

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Windows(self.num_rows, self.bptt, self._starts[index])
        start = self._starts[index]
        return Window(start, min(self.bptt, self.num_rows - 1 - start))


def windows(num_rows: int, bptt: int) -> Windows:
    return Windows(num_rows, bptt)


def get_window(data, window: Window):
    """Inputs and next-token targets (int64) for one window of a ``(T, B)`` stream."""
    x = data[window.start : window.start + window.length].long()  # (t, B)
    y = data[window.start + 1 : window.start + 1 + window.length].long()  # (t, B)
    return x, y
