import codecs
import hashlib

import numpy as np
import pytest
import torch

from charlstm.corpus import (
    TextSource,
    batchify,
    builtin_text,
    encode_to_file,
    get_window,
    read_text,
    split_train_val,
    windows,
)
from charlstm.errors import DataError
from charlstm.tokenizers import CharTokenizer


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


def test_chunked_reading_matches_reading_whole(tmp_path, monkeypatch):
    """Multi-byte characters and CRLF pairs that straddle a chunk boundary come through intact."""
    from charlstm import corpus

    text = "naïve café — 日本語 🙂\r\nline two\rthree\n" * 50
    path = tmp_path / "t.txt"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    monkeypatch.setattr(corpus, "_READ_BYTES", 7)  # boundaries everywhere
    source = TextSource.from_file(path)
    assert source.read() == text  # BOM dropped, CR and CRLF kept as they are
    assert source.stats.chars == len(text) and source.stats.bytes == len(text.encode())
    assert source.stats.sha256 == source.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_invalid_byte_offset_is_exact_across_chunks(tmp_path, monkeypatch):
    from charlstm import corpus

    monkeypatch.setattr(corpus, "_READ_BYTES", 5)
    data = "ab日本".encode() + b"\xe6\x97" + b"xyz"  # a character cut short at byte 8
    (tmp_path / "bad.txt").write_bytes(data)
    with pytest.raises(DataError, match=r"byte 0xe6 at byte offset 8\)"):
        read_text(tmp_path / "bad.txt")
    (tmp_path / "nul.txt").write_bytes(b"abcdefghij\x00")
    with pytest.raises(DataError, match="NUL byte at byte offset 10"):
        read_text(tmp_path / "nul.txt")


def test_encoding_errors_replace_counts(tmp_path):
    (tmp_path / "l.txt").write_bytes("café\n".encode("latin-1") * 3 + b"ok \xff\xfe\n")
    source = TextSource.from_file(tmp_path / "l.txt", encoding_errors="replace")
    assert source.read() == "caf\ufffd\n" * 3 + "ok \ufffd\ufffd\n"
    assert source.stats.replacements == 5


def test_encode_to_file_memory_maps_the_ids(tmp_path, monkeypatch):
    from charlstm import corpus

    monkeypatch.setattr(corpus, "_READ_BYTES", 1000)
    text = "x" * 2500 + "\n" + "hello world\n" * 300  # a long line, then short ones
    tok = CharTokenizer.train(text)
    encoded = encode_to_file(TextSource.from_text(text), tok, tmp_path / "ids")
    assert isinstance(encoded.ids, np.memmap) and encoded.ids.dtype == np.uint8
    assert encoded.ids.tolist() == tok.encode(text).tolist()
    data = batchify(encoded.ids, 4)
    assert not data.is_contiguous()  # a strided view of the file, not a copy
    assert data[:, 1].tolist() == encoded.ids[len(encoded.ids) // 4 : 2 * (len(encoded.ids) // 4)].tolist()


def test_bom_makes_no_difference_to_the_model(tmp_path):
    from charlstm.config import TrainConfig
    from charlstm.train import train

    text = "\n".join(f"line {i} of a small text" for i in range(200))
    (tmp_path / "plain.txt").write_bytes(text.encode())
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + text.encode())
    config = TrainConfig(batch_size=4, bptt=16, max_steps=3, device="cpu")
    options = {"embedding_dim": 8, "hidden_size": 8, "num_layers": 1}
    a = train(TextSource.from_file(tmp_path / "plain.txt"), config, options, out=tmp_path / "a")
    b = train(TextSource.from_file(tmp_path / "bom.txt"), config, options, out=tmp_path / "b")
    wa, wb = (torch.load(r.last_path, weights_only=True) for r in (a, b))
    assert wa["tokenizer"] == wb["tokenizer"]
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
