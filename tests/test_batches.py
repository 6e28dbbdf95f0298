import numpy as np
import torch

from charlstm.data.batches import (
    batchify,
    encode_to_file,
    get_window,
    held_out_text,
    lay_out,
    split_train_val,
    variable_windows,
    windows,
)
from charlstm.data.text import TextSource
from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer


def test_split_keeps_the_end_for_validation():
    ids = np.arange(100)
    train, val = split_train_val(ids, 0.1)
    assert train.tolist() == list(range(90))
    assert val.tolist() == list(range(90, 100))


def test_batchify_layout_columns_are_contiguous_streams():
    data = batchify(np.arange(26), 4)  # 'a'..'z' -> 6 rows, the last 2 dropped
    assert tuple(data.shape) == (6, 4) and data.dtype == torch.uint8  # compact; windows widen it
    assert data[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert data[:, 1].tolist() == [6, 7, 8, 9, 10, 11]
    assert data[0].tolist() == [0, 6, 12, 18]


def test_windows_chain_so_targets_follow_inputs():
    data = batchify(np.arange(40), 2)  # 20 rows
    ws = windows(data.size(0), 7)
    assert [(w.start, w.length) for w in ws] == [(0, 7), (7, 7), (14, 5)]
    x, y = get_window(data, ws[1])
    assert (y[:-1] == x[1:]).all()
    assert (y == x + 1).all() and x.dtype == torch.int64
    assert batchify(np.arange(40_000), 2).dtype == torch.int32
    # Every input row except the last is used exactly once.
    assert sum(w.length for w in ws) == data.size(0) - 1


def test_variable_windows_cover_every_row_once_and_move_with_the_seed():
    rows = 5001
    a = variable_windows(rows, 64, (1, 0))
    lengths = [w.length for w in a]
    starts = [w.start for w in a]
    assert starts[0] == 0 and sum(lengths) == rows - 1  # every input row once, in order
    assert all(s + n == t for s, n, t in zip(starts, lengths, starts[1:]))
    assert all(5 <= n <= 84 for n in lengths[:-1]) and 1 <= lengths[-1] <= 84
    assert 50 <= sum(lengths[:-1]) / (len(lengths) - 1) <= 66  # around --bptt (one in 20 around half)
    assert min(lengths[:-1]) < 40  # the half-length draws happen
    assert [(w.start, w.length) for w in variable_windows(rows, 64, (1, 0))] == list(zip(starts, lengths))
    moved = variable_windows(rows, 64, (1, 1))  # the next epoch: other cuts
    assert [w.start for w in moved] != starts
    tail = a[3:]  # a resumed epoch goes on from its window
    assert len(tail) == len(a) - 3 and (tail[0].start, tail[0].length) == (starts[3], lengths[3])
    short = variable_windows(10, 3, 0)  # a --bptt below 5 is its own lower bound
    assert sum(w.length for w in short) == 9 and all(w.length >= 1 for w in short)


def test_encode_to_file_memory_maps_the_ids(tmp_path, monkeypatch):
    from charlstm.data import batches as batches_module
    from charlstm.data import text as text_module

    monkeypatch.setattr(text_module, "READ_BYTES", 1000)  # chunks of the text
    monkeypatch.setattr(batches_module, "READ_BYTES", 1000)  # where a long line is cut for subwords
    text = "x" * 2500 + "\n" + "hello world\n" * 300  # a long line, then short ones
    tok = CharTokenizer.train(text)
    encoded = encode_to_file(TextSource.from_text(text), tok, tmp_path / "ids")
    assert isinstance(encoded.ids, np.memmap) and encoded.ids.dtype == np.uint8
    assert encoded.ids.tolist() == tok.encode(text).tolist()
    data = batchify(encoded.ids, 4)
    assert not data.is_contiguous()  # a strided view of the file, not a copy
    assert data[:, 1].tolist() == encoded.ids[len(encoded.ids) // 4 : 2 * (len(encoded.ids) // 4)].tolist()


def test_lay_out_shards_split_and_caps_validation():
    ids = np.arange(1000, dtype=np.int16)  # 900 train, 100 validation
    whole = lay_out(ids, 0.1, batch_size=3, bptt=10, eval_tokens=1_000_000)
    assert (whole.train_tokens, whole.val_tokens, whole.val_tokens_scored) == (900, 100, 100)
    assert tuple(whole.stream.shape) == (300, 3) and len(whole.windows) == 30
    assert whole.val_ids.tolist() == list(range(900, 1000))
    second = lay_out(ids, 0.1, batch_size=3, bptt=10, eval_tokens=40, rank=1, world_size=2)
    assert second.stream[:, 0].tolist() == list(range(450, 600))  # rank 1's half, stream 0
    assert second.val_ids.tolist() == list(range(950, 970))  # its half of validation, first 40 / 2
    assert (second.train_tokens, second.val_tokens_scored) == (900, 40)


def test_held_out_text_is_the_validation_split_decoded():
    text = "hello, wörld! " * 20
    char = CharTokenizer.train(text)
    assert held_out_text(char.encode(text), 0.1, char) == text[-28:]
    byte = ByteTokenizer()
    ids = byte.encode(text)
    assert held_out_text(ids, 0.1, byte).encode() == text.encode()[-len(split_train_val(ids, 0.1)[1]) :]
