from charlstm.corpus import TextSource
from charlstm.runs import prepare_run_dir, source_of, token_ids
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
    ids, stats, how = token_ids(tmp_path, source, tok)
    assert how.startswith("wrote") and stats["chars"] == 600 and len(ids) == 600
    again, _, how = token_ids(tmp_path, source, tok, expected_sha256=source.sha256())
    assert how.startswith("reused") and again.tolist() == ids.tolist()
    other = CharTokenizer.train("hello world\n!")  # another vocabulary: the file is not reused
    _, _, how = token_ids(tmp_path, source, other, expected_sha256=source.sha256())
    assert how.startswith("wrote")
    assert source_of({"path": str(path), "name": "t"}, "strict").path == path
