import numpy as np
import pytest
import torch

from charlstm.corpus import (
    batchify,
    builtin_text,
    get_window,
    read_text,
    split_train_val,
    windows,
)
from charlstm.errors import DataError


def test_builtin_corpus_is_the_python_reference():
    text = builtin_text()
    assert 400_000 < len(text) < 600_000
    assert "assignment statement" in text.lower()


def test_read_text_strips_utf8_bom(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\n")
    assert read_text(path) == "hello\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"  \n\t \n", "only whitespace"),
        (b"abc\xffdef", "not valid UTF-8 (byte 0xff at byte offset 3)"),
        (b"ab\x00cd", "looks binary (NUL byte at byte offset 2)"),
        ("hello".encode("utf-16"), "UTF-16"),
    ],
)
def test_read_text_refuses(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_text(path)


def test_read_text_missing_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="is a directory"):
        read_text(tmp_path)


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
