"""Reading text safely: UTF-8 checked byte by byte, in chunks, never a whole file in memory.

A ``TextSource`` is a file or a text in memory. Each pass over it (``chunks``) decodes and checks
as it goes: anything that is not text is refused with the byte offset of the problem. What a pass
saw (characters, bytes, replacements, SHA-256) goes into the ``TextStats`` the caller hands it.
A UTF-8 byte-order mark is dropped; line ends are kept exactly as they are.
"""

from __future__ import annotations

import codecs
import contextvars
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from charlstm.config import ENCODING_ERRORS
from charlstm.errors import DataError

BUILTIN_NAME = "the Python Language Reference (pydoc_data.topics, shipped with Python)"
BUILTIN_STEM = "python-reference"

# Files are read this many bytes at a time: memory stays flat whatever the file's size.
READ_BYTES = 4 << 20


def builtin_text() -> str:
    """The built-in corpus: the Python Language Reference topics every Python install carries."""
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key].strip("\n") for key in sorted(topics.topics)) + "\n"


@dataclass
class TextStats:
    """What one full pass over a text saw."""

    chars: int = 0
    bytes: int = 0  # UTF-8 bytes of the decoded text (a stripped BOM is not counted)
    replacements: int = 0  # invalid byte sequences replaced by U+FFFD (--encoding-errors replace)
    sha256: str = ""  # of the file's bytes (or the text's UTF-8), identifies the text for --resume

    def to_dict(self) -> dict:
        return {"chars": self.chars, "bytes": self.bytes, "replacements": self.replacements, "sha256": self.sha256}


# --encoding-errors replace: each invalid byte sequence becomes U+FFFD and is counted in the
# stats of the pass that is decoding (a codec error handler is global; the count is not).
_decoding: contextvars.ContextVar[TextStats] = contextvars.ContextVar("charlstm_decoding")


def _replace_and_count(error: UnicodeDecodeError):
    _decoding.get().replacements += 1
    return "\ufffd", error.end


codecs.register_error("charlstm.replace", _replace_and_count)


class TextSource:
    """A UTF-8 text: a file (read in chunks, never held whole) or a text in memory. A
    ``charlstm.data.source.Source``, as a ``Corpus`` of many files is."""

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
            raise ValueError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}")
        self.name = name  # shown to the user: a path, or the built-in corpus's description
        self.stem = stem  # default run directory name
        self.path = None if path is None else Path(path)
        self.text = text
        self.encoding_errors = encoding_errors

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

    @property
    def is_builtin(self) -> bool:
        return self.name == BUILTIN_NAME and self.path is None

    def size_hint(self) -> int:
        """About how many characters the text holds (a file's size in bytes)."""
        return len(self.text) if self.text is not None else self.path.stat().st_size

    def sha256(self) -> str:
        """SHA-256 of the file's bytes (or the text's UTF-8): what a full pass's stats will say."""
        if self.text is not None:
            return hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()
        try:
            return file_sha256(self.path)
        except OSError as e:
            raise DataError(f"{self.name}: cannot read ({e.strerror})") from None

    def read(self, stats: TextStats | None = None) -> str:
        """The whole text at once (for small texts)."""
        return "".join(self.chunks(stats))

    def chunks(self, stats: TextStats | None = None) -> Iterator[str]:
        """The decoded text in pieces of up to a few million characters. ``stats``, when given, is
        filled in as the pass goes and complete when it ends."""
        stats = TextStats() if stats is None else stats
        if self.text is not None:
            return self._text_chunks(stats)
        return self._file_chunks(stats)

    def sections(self, stats: TextStats | None = None) -> list[Iterator[str]]:
        """The text as one run of chunks (a ``Corpus`` with held-out files has two)."""
        return [self.chunks(stats)]

    def record(self, stats: TextStats) -> dict:
        """What a checkpoint records of the text (``stats``: a full pass's), for ``--resume`` to
        find it again: a file's path, size and SHA-256."""
        record = {
            "name": self.name,
            "path": None if self.path is None else str(self.path.resolve()),
            "builtin": self.is_builtin,
            "encoding_errors": self.encoding_errors,
            **stats.to_dict(),
        }
        if self.path is not None:
            record["files"] = [
                {"path": record["path"], "name": self.name, "size": self.path.stat().st_size, "sha256": stats.sha256}
            ]
        return record

    def adopt(self, record: dict, encoding_errors: str) -> None:
        """Read the text as the run of ``record`` read it (the run's ``--encoding-errors``). Its
        SHA-256 is checked against the record's when its tokens are read."""
        self.encoding_errors = encoding_errors

    def files_info(self, val_fraction: float) -> dict:
        """Nothing: the start of training describes the files of a ``Corpus`` only."""
        return {}

    def _text_chunks(self, stats: TextStats) -> Iterator[str]:
        text = self.text
        if not text.strip():
            raise DataError(f"{self.name}: the text is empty or only whitespace")
        digest = hashlib.sha256()
        for start in range(0, len(text), READ_BYTES):
            piece = text[start : start + READ_BYTES]
            data = piece.encode("utf-8", "surrogatepass")
            digest.update(data)
            stats.chars += len(piece)
            stats.bytes += len(data)
            yield piece
        stats.sha256 = digest.hexdigest()

    def _file_chunks(self, stats: TextStats) -> Iterator[str]:
        name = self.name
        digest = hashlib.sha256()
        codec_errors = "charlstm.replace" if self.encoding_errors == "replace" else "strict"
        decoder = codecs.getincrementaldecoder("utf-8")(codec_errors)
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
                    data = f.read(max(READ_BYTES, 4) if first else READ_BYTES)  # a BOM is whole
                except OSError as e:
                    raise DataError(f"{name}: cannot read ({e.strerror})") from None
                if first:
                    first = False
                    _check_start(name, data)
                    digest.update(data[: len(codecs.BOM_UTF8)] if data.startswith(codecs.BOM_UTF8) else b"")
                    offset = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
                    data = data[offset:]
                final = not data
                digest.update(data)
                nul = data.find(b"\x00")
                if nul != -1:
                    # The first problem in the file is the one named, wherever the chunks were cut:
                    # invalid UTF-8 before the NUL comes first.
                    if self.encoding_errors == "strict":
                        _decode_or_refuse(name, decoder, data[:nul], False, offset)
                    raise DataError(
                        f"{name}: looks binary (NUL byte at byte offset {offset + nul}); charlstm reads "
                        "UTF-8 text (convert UTF-16 files to UTF-8)"
                    )
                pending = decoder.getstate()[0]
                replaced = stats.replacements
                token = _decoding.set(stats)
                try:
                    text = _decode_or_refuse(name, decoder, data, final, offset)
                finally:
                    _decoding.reset(token)
                offset += len(data)
                if stats.replacements != replaced:  # U+FFFD is 3 bytes, whatever it replaced
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
        stats.sha256 = digest.hexdigest()


def _decode_or_refuse(name: str, decoder, data: bytes, final: bool, offset: int) -> str:
    """``decoder.decode(data, final)``; invalid UTF-8 is refused with its byte offset in the file
    (``offset``: where ``data`` starts; the decoder may hold the start of a sequence before it)."""
    pending = decoder.getstate()[0]
    try:
        return decoder.decode(data, final)
    except UnicodeDecodeError as e:
        bad = (pending + data)[e.start]
        raise DataError(
            f"{name}: not valid UTF-8 (byte 0x{bad:02x} at byte offset "
            f"{offset - len(pending) + e.start}); convert it to UTF-8, or pass "
            "--encoding-errors replace to replace invalid bytes with U+FFFD"
        ) from None


def _check_start(name: str, data: bytes) -> None:
    if not data:
        raise DataError(f"{name}: the file is empty; give a text file with some content")
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or data[:4] in (
        codecs.BOM_UTF32_LE,
        codecs.BOM_UTF32_BE,
    ):
        raise DataError(f"{name}: looks like UTF-16/UTF-32 or binary data, not UTF-8 text; convert it to UTF-8")


def read_text(path: str | os.PathLike, encoding_errors: str = "strict") -> str:
    """Read a whole UTF-8 text file, refusing anything that is not text (see ``TextSource``)."""
    return TextSource.from_file(path, encoding_errors).read()


def decode_input(data: bytes, name: str) -> str:
    """Bytes a user gave whole (stdin, a prime file) as text, with the same checks as a file: UTF-8
    with the byte offset of the first invalid byte, no NUL, a byte-order mark dropped. Unlike a
    training text, whitespace alone is a text (a prime may be a newline)."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise DataError(f"{name}: looks like UTF-16/UTF-32 or binary data, not UTF-8 text; convert it to UTF-8")
    nul = data.find(b"\x00")
    if nul != -1:
        raise DataError(f"{name}: looks binary (NUL byte at byte offset {nul}); charlstm reads UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte offset {e.start}); convert it to UTF-8"
        ) from None


def read_head(source: TextSource, max_chars: int) -> str:
    """The first ``max_chars`` characters of ``source``, reading no more of it than needed."""
    text = ""
    for chunk in source.chunks():
        text += chunk[: max_chars - len(text)]
        if len(text) >= max_chars:
            break
    return text


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while data := f.read(READ_BYTES):
            digest.update(data)
    return digest.hexdigest()
