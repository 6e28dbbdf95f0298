"""Text files in, token streams out: safe reading, the train/validation split, and the
``(T, B)`` stream layout that truncated backpropagation through time walks over.
"""

from __future__ import annotations

import codecs
import os
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


def read_text(path: str | os.PathLike, encoding_errors: str = "strict") -> str:
    """Read a UTF-8 text file for training or evaluation, refusing anything that is not text.

    A UTF-8 byte-order mark is dropped. Line ends are kept as they are.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a text file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    return decode_text(data, str(path), encoding_errors)


def decode_text(data: bytes, name: str, encoding_errors: str = "strict") -> str:
    if not data:
        raise DataError(f"{name}: the file is empty; give a text file with some content")
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) or data[:4] in (
        codecs.BOM_UTF32_LE,
        codecs.BOM_UTF32_BE,
    ):
        raise DataError(
            f"{name}: looks like UTF-16/UTF-32 or binary data, not UTF-8 text; convert it to UTF-8"
        )
    nul = data.find(b"\x00")
    if nul != -1:
        raise DataError(
            f"{name}: looks binary (NUL byte at byte offset {nul}); charlstm reads UTF-8 text "
            "(convert UTF-16 files to UTF-8)"
        )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8", encoding_errors)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{name}: not valid UTF-8 (byte 0x{data[e.start]:02x} at byte offset {e.start}); "
            "convert it to UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{name}: the file holds only whitespace; give a text file with some content")
    return text


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
    smallest integer type that holds the ids (uint8, int16 or int32, never int64: a 100 MB char
    corpus stays 100 MB); ``get_window`` widens one window at a time.
    """
    import torch

    steps = len(ids) // batch_size
    ids = np.asarray(ids[: steps * batch_size])
    top = int(ids.max()) if len(ids) else 0
    dtype = np.uint8 if top < 256 else np.int16 if top < 32768 else np.int32
    data = ids.astype(dtype, copy=False).reshape(batch_size, steps).T  # (T, B)
    return torch.from_numpy(np.ascontiguousarray(data))


@dataclass(frozen=True)
class Window:
    start: int
    length: int


def windows(num_rows: int, bptt: int) -> list[Window]:
    """Consecutive ``bptt``-long windows over ``num_rows`` rows; each input row needs the next
    row as its target, so the windows cover rows ``0 .. num_rows - 2`` as inputs."""
    return [Window(i, min(bptt, num_rows - 1 - i)) for i in range(0, num_rows - 1, bptt)]


def get_window(data, window: Window):
    """Inputs and next-token targets (int64) for one window of a ``(T, B)`` stream."""
    x = data[window.start : window.start + window.length].long()  # (t, B)
    y = data[window.start + 1 : window.start + 1 + window.length].long()  # (t, B)
    return x, y
