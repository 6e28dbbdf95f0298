"""Token streams for training: the token file, the train/validation split, the ``(T, B)`` layout
and the windows that truncated backpropagation through time walks over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from charlstm.atomic import atomic_write
from charlstm.data.source import Source
from charlstm.data.text import READ_BYTES, TextStats
from charlstm.data.tokenizers import id_dtype


@dataclass
class EncodedText:
    """A text's token ids in a file, opened as a memory map, with what encoding it saw."""

    ids: np.ndarray  # 1-D, memory-mapped
    stats: TextStats
    unknown: int  # ids that are the tokenizer's unknown symbol
    val_start: int | None = None  # where the validation files begin (a corpus with --val-files)


def encode_to_file(source: Source, tokenizer, path: str | os.PathLike) -> EncodedText:
    """Encode ``source`` chunk by chunk into ``path`` (raw ids, written atomically) and memory-map
    the result.

    Memory stays bounded by the chunk size, whatever the text's size. Char and byte ids are the
    same however the text is cut; for subwords the text is cut after a newline (no piece spans
    one, so the ids are those of the whole text), and a line longer than a chunk where it ends.
    """
    dtype = id_dtype(tokenizer.vocab_size)
    stats = TextStats()
    counts = {"ids": 0, "unknown": 0}
    # A corpus with validation files comes in two sections, encoded apart so that the ids of the
    # validation files start at a known place.
    sections = source.sections(stats)
    starts = []

    def write(f) -> None:
        for section in sections:
            starts.append(counts["ids"])
            for piece in _encodable_pieces(section, tokenizer.cuts_anywhere):
                ids = tokenizer.encode(piece).astype(dtype, copy=False)
                f.write(ids.tobytes())
                counts["ids"] += len(ids)
                if tokenizer.unk_id is not None:
                    counts["unknown"] += int(np.count_nonzero(ids == tokenizer.unk_id))

    atomic_write(path, write)
    val_start = starts[1] if len(starts) > 1 else None
    return EncodedText(open_tokens(path, dtype, counts["ids"]), stats, counts["unknown"], val_start)


def _encodable_pieces(chunks, cuts_anywhere: bool):
    if cuts_anywhere:
        yield from chunks
        return
    carry = ""
    for chunk in chunks:
        carry += chunk
        cut = carry.rfind("\n") + 1
        if cut == 0:
            if len(carry) < READ_BYTES:
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


def split_train_val(ids, val_fraction: float, val_start: int | None = None):
    """The last ``val_fraction`` of a token stream (or a text) is validation, the rest is training
    (or, given ``val_start``, everything from there: a corpus's validation files)."""
    if val_start is not None:
        return ids[:val_start], ids[val_start:]
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
    the right starting state for the top of the next. Returns a ``(T, B)`` tensor in the token
    id type (``tokenizers.id_dtype``; never int64); a memory-mapped array stays a view of its
    file, so a 1 GB corpus is not copied into memory. ``get_window`` widens one window at a time.
    """
    import torch

    steps = len(ids) // batch_size
    ids = ids[: steps * batch_size]
    if not isinstance(ids, np.ndarray):
        ids = np.asarray(ids)
    if ids.dtype not in (np.uint8, np.int16, np.int32):
        ids = ids.astype(id_dtype(int(ids.max()) + 1 if len(ids) else 1))
    return torch.from_numpy(ids.reshape(batch_size, steps).T)  # (T, B), a view: no copy


@dataclass(frozen=True)
class Window:
    start: int
    length: int


class Windows(Sequence):
    """Consecutive ``bptt``-long windows over ``num_rows`` rows, made on demand (a 1 GB corpus has
    half a million of them). Each input row needs the next row as its target, so the windows
    cover rows ``0 .. num_rows - 2`` as inputs. Slicing gives the windows from a position on.
    ``lengths``: windows of these lengths instead (``variable_windows``)."""

    def __init__(self, num_rows: int, bptt: int, starts=None, lengths: np.ndarray | None = None):
        self.num_rows, self.bptt = num_rows, bptt
        self._starts = range(0, num_rows - 1, bptt) if starts is None else starts
        self._lengths = lengths

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index):
        if isinstance(index, slice):
            lengths = None if self._lengths is None else self._lengths[index]
            return Windows(self.num_rows, self.bptt, self._starts[index], lengths)
        start = int(self._starts[index])
        if self._lengths is not None:
            return Window(start, int(self._lengths[index]))
        return Window(start, min(self.bptt, self.num_rows - 1 - start))


def windows(num_rows: int, bptt: int) -> Windows:
    return Windows(num_rows, bptt)


def variable_windows(num_rows: int, bptt: int, seed) -> Windows:
    """Windows whose lengths are drawn as awd-lstm-lm draws them: around ``bptt`` (one time in 20
    around ``bptt / 2``), normal noise of standard deviation 5, kept within [min(5, bptt),
    bptt + 20]. A different ``seed`` (the run's seed and the epoch) moves every cut."""
    rng = np.random.default_rng(seed)
    rows = num_rows - 1  # input rows
    low, high = min(5, bptt), bptt + 20
    drawn, total = [], 0
    while total < rows:
        k = int((rows - total) / (0.975 * bptt)) + 16
        base = np.where(rng.random(k) < 0.95, bptt, bptt / 2)
        lengths = np.clip(np.rint(rng.normal(base, 5.0)), low, high).astype(np.int64)
        drawn.append(lengths)
        total += int(lengths.sum())
    lengths = np.concatenate(drawn)
    ends = np.cumsum(lengths)
    lengths = lengths[: int(np.searchsorted(ends, rows)) + 1]  # the windows that start before the end
    starts = np.cumsum(lengths) - lengths
    lengths[-1] = rows - starts[-1]
    return Windows(num_rows, bptt, starts, lengths)


def get_window(data, window: Window):
    """Inputs and next-token targets (int64) for one window of a ``(T, B)`` stream."""
    x = data[window.start : window.start + window.length].long()  # (t, B)
    y = data[window.start + 1 : window.start + 1 + window.length].long()  # (t, B)
    return x, y


@dataclass
class TrainData:
    """What the trainer reads: the training streams and their windows, and validation ids.

    ``stream`` is ``(T, B)`` (this process's shard under torchrun); ``val_ids`` is what each
    evaluation scores (at most ``--eval-tokens`` of this process's share of the held-out text).
    """

    stream: object  # torch.Tensor (T, B)
    windows: Windows  # the first epoch's
    val_ids: np.ndarray
    train_tokens: int  # in all processes
    val_tokens: int  # held out, in all processes
    val_tokens_scored: int  # what each evaluation scores, in all processes
    variable_bptt_seed: int | None = None  # --variable-bptt: each epoch's windows drawn anew

    def epoch_windows(self, epoch: int) -> Windows:
        """The windows of epoch ``epoch`` (the same for every process and on every resume)."""
        if self.variable_bptt_seed is None:
            return self.windows
        return variable_windows(self.windows.num_rows, self.windows.bptt, (self.variable_bptt_seed, epoch))


def lay_out(ids: np.ndarray, val_fraction: float, *, batch_size: int, bptt: int, eval_tokens: int,
            rank: int = 0, world_size: int = 1, val_start: int | None = None,
            variable_bptt_seed: int | None = None) -> TrainData:
    """Split ``ids``, take this process's shard of each part and lay the training part out.

    Every process gets a contiguous shard of the same length, so all of them run the same number
    of windows (DistributedDataParallel needs that). The first ``eval_tokens`` of the held-out
    shard are scored at each evaluation: a huge corpus's validation split would take longer to
    score than training between evaluations (``charlstm eval`` measures a whole file).
    """
    train_ids, val_ids = split_train_val(ids, val_fraction, val_start)
    val_total = len(val_ids)
    train_ids, val_ids = _shard(train_ids, rank, world_size), _shard(val_ids, rank, world_size)
    val_ids = val_ids[: max(2, eval_tokens // world_size)]
    stream = batchify(train_ids, batch_size)
    first = windows(stream.size(0), bptt)
    if variable_bptt_seed is not None:
        first = variable_windows(stream.size(0), bptt, (variable_bptt_seed, 0))
    return TrainData(
        stream=stream,
        windows=first,
        variable_bptt_seed=variable_bptt_seed,
        val_ids=val_ids,
        train_tokens=len(train_ids) * world_size,
        val_tokens=val_total,
        val_tokens_scored=len(val_ids) * world_size,
    )


def _shard(ids, rank: int, world_size: int):
    """Share ``rank`` of ``world_size`` equal contiguous shares of ``ids``."""
    length = len(ids) // world_size
    return ids[rank * length : (rank + 1) * length]


def held_out_text(ids: np.ndarray, val_fraction: float, tokenizer, val_start: int | None = None) -> str:
    """The text of the validation split of ``ids`` (what training validated on), decoded from its
    tokens, so it is the same split whatever the tokenizer."""
    _, val_ids = split_train_val(ids, val_fraction, val_start)
    table = tokenizer.token_bytes()
    return b"".join(table[i] for i in np.asarray(val_ids).tolist()).decode("utf-8", "replace")
