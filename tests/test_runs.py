import json

from charlstm.runs import prepare_run_dir, source_of, token_file, validation_text
from charlstm.text import TextSource
from charlstm.tokenizers import CharTokenizer


def test_default_run_directory_moves_on(tmp_path):
    a, created = prepare_run_dir(None, "text", root=tmp_path)
    (a / "config.json").write_text("{}")
    b, _ = prepare_run_dir(None, "text", root=tmp_path)
    assert (a.name, b.name, created) == ("text", "text-2", a)


def test_token_file_is_reused_only_for_the_same_text_and_tokenizer(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hello world\n" * 50)
    source = TextSource.from_file(path)
    tok = CharTokenizer.train(source.read())
    first = token_file(tmp_path, source, tok)
    assert first.how == f"wrote {tmp_path / 'tokens.bin'}" and first.stats.chars == 600 and len(first.ids) == 600
    assert json.loads((tmp_path / "tokens.json").read_text())["count"] == 600
    again = token_file(tmp_path, source, tok, expected_sha256=source.sha256())
    assert again.how.startswith("reused") and again.ids.tolist() == first.ids.tolist()
    assert again.stats == first.stats
    other = CharTokenizer.train("hello world\n!")  # another vocabulary: the file is not reused
    assert token_file(tmp_path, source, other, expected_sha256=source.sha256()).how.startswith("wrote")
    assert source_of({"path": str(path), "name": "t"}, "strict").path == path


def test_validation_text_is_what_training_held_out(tiny_run, small_text):
    # The tiny run trained on small_text with the default --val-fraction 0.1.
    assert validation_text(tiny_run) == small_text[-2000:]
