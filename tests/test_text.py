import codecs
import hashlib

import pytest
import torch

from charlstm.errors import DataError
from charlstm.data.text import TextSource, TextStats, builtin_text, read_head, read_text


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


def test_chunked_reading_matches_reading_whole(tmp_path, monkeypatch):
    """Multi-byte characters and CRLF pairs that straddle a chunk boundary come through intact."""
    from charlstm.data import text as text_module

    text = "naïve café — 日本語 🙂\r\nline two\rthree\n" * 50
    path = tmp_path / "t.txt"
    path.write_bytes(codecs.BOM_UTF8 + text.encode())
    monkeypatch.setattr(text_module, "READ_BYTES", 7)  # boundaries everywhere
    source = TextSource.from_file(path)
    stats = TextStats()
    assert source.read(stats) == text  # BOM dropped, CR and CRLF kept as they are
    assert stats.chars == len(text) and stats.bytes == len(text.encode())
    assert stats.sha256 == source.sha256() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_invalid_byte_offset_is_exact_across_chunks(tmp_path, monkeypatch):
    from charlstm.data import text as text_module

    monkeypatch.setattr(text_module, "READ_BYTES", 5)
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
    stats = TextStats()
    assert source.read(stats) == "caf\ufffd\n" * 3 + "ok \ufffd\ufffd\n"
    assert stats.replacements == 5 and stats.chars == 21


def test_each_pass_counts_its_own_replacements(tmp_path, monkeypatch):
    """Two passes read side by side (the chunks interleaved) count only what each one replaced."""
    from charlstm.data import text as text_module

    monkeypatch.setattr(text_module, "READ_BYTES", 4)
    (tmp_path / "a.txt").write_bytes(b"ab\xffcd\xfeef\xfd")  # 3 bad bytes
    (tmp_path / "b.txt").write_bytes(b"xyz\xffxyz")  # 1 bad byte
    a, b = (TextSource.from_file(tmp_path / n, encoding_errors="replace") for n in ("a.txt", "b.txt"))
    stats_a, stats_b = TextStats(), TextStats()
    chunks_a, chunks_b = a.chunks(stats_a), b.chunks(stats_b)
    for _ in range(4):
        next(chunks_a, None)
        next(chunks_b, None)
    assert (stats_a.replacements, stats_b.replacements) == (3, 1)


def test_read_head_stops_at_max_chars(tmp_path, monkeypatch):
    from charlstm.data import text as text_module

    monkeypatch.setattr(text_module, "READ_BYTES", 8)
    path = tmp_path / "t.txt"
    path.write_text("0123456789" * 10)
    assert read_head(TextSource.from_file(path), 25) == ("0123456789" * 3)[:25]
    assert read_head(TextSource.from_text("short"), 25) == "short"


def test_bom_makes_no_difference_to_the_model(tmp_path):
    from charlstm.config import ModelShape, TrainConfig
    from charlstm.training.trainer import train

    text = "\n".join(f"line {i} of a small text" for i in range(200))
    (tmp_path / "plain.txt").write_bytes(text.encode())
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + text.encode())
    config = TrainConfig(batch_size=4, bptt=16, max_steps=3, device="cpu")
    options = ModelShape(embedding_dim=8, hidden_size=8, num_layers=1)
    a = train(TextSource.from_file(tmp_path / "plain.txt"), config, options, out=tmp_path / "a")
    b = train(TextSource.from_file(tmp_path / "bom.txt"), config, options, out=tmp_path / "b")
    wa, wb = (torch.load(r.last_path, weights_only=True) for r in (a, b))
    assert wa["tokenizer"] == wb["tokenizer"]
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])



@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 1 << 20])
def test_the_first_problem_is_named_whatever_the_chunks(tmp_path, monkeypatch, chunk):
    """Found by tests/fuzz/fuzz_text.py: invalid UTF-8 before a NUL in the same chunk was reported
    as the NUL; and a first chunk shorter than a BOM let a UTF-8 BOM through and hid a UTF-16 one."""
    from charlstm.data import text as text_module

    monkeypatch.setattr(text_module, "READ_BYTES", chunk)
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xc0\x00\x00")
    with pytest.raises(DataError) as e:
        read_text(path)
    assert str(e.value) == (
        f"{path}: not valid UTF-8 (byte 0xc0 at byte offset 0); convert it to UTF-8, or pass "
        "--encoding-errors replace to replace invalid bytes with U+FFFD"
    )
    path.write_bytes(b"ab\x00\xc0")
    with pytest.raises(DataError, match="NUL byte at byte offset 2"):
        read_text(path)
    path.write_bytes(codecs.BOM_UTF8 + b"ab")
    assert read_text(path) == "ab"
    path.write_bytes("hello".encode("utf-16"))
    with pytest.raises(DataError, match="looks like UTF-16/UTF-32"):
        read_text(path)
