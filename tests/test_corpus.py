import json

import pytest
from click.testing import CliRunner

from charlstm.cli import cli
from charlstm.data.corpus import Corpus, completion, expand_paths
from charlstm.errors import DataError
from tests.conftest import TINY_MODEL


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"})  # no wrapped lines


@pytest.fixture
def tree(tmp_path, small_text):
    """a.txt, b.txt (no final newline), notes/c.md, notes/sub/d.txt, plus files a directory
    leaves out: hidden ones and a binary one."""
    root = tmp_path / "corpus"
    (root / "notes" / "sub").mkdir(parents=True)
    (root / "notes" / ".git").mkdir()
    parts = [small_text[i * 4000 : (i + 1) * 4000] for i in range(4)]
    (root / "a.txt").write_text(parts[0].rstrip("\n") + "\n")
    (root / "b.txt").write_text(parts[1].rstrip("\n"))
    (root / "notes" / "c.md").write_text(parts[2])
    (root / "notes" / "sub" / "d.txt").write_text(parts[3])
    (root / "notes" / ".hidden.txt").write_text("hidden")
    (root / "notes" / ".git" / "config").write_text("hidden too")
    (root / "notes" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    return root


def test_directories_and_patterns_expand_sorted_and_once(tree, monkeypatch):
    monkeypatch.chdir(tree)
    files = expand_paths(["b.txt", "notes", "notes/**/*.md", "a.txt"])
    assert [str(p) for p in files] == ["b.txt", "notes/c.md", "notes/sub/d.txt", "a.txt"]
    assert [str(p) for p in expand_paths(["**/*.txt"])] == ["a.txt", "b.txt", "notes/sub/d.txt"]
    with pytest.raises(DataError, match=r"^poems/\*\*/\*\.md: no file matches this pattern$"):
        expand_paths(["a.txt", "poems/**/*.md"])
    (tree / "empty").mkdir()
    with pytest.raises(DataError, match="^empty: is a directory with no text files in it"):
        expand_paths(["empty"])


@pytest.mark.parametrize(
    "tail, separator, added",
    [("end", "\n\n", "\n\n"), ("end\n", "\n\n", "\n"), ("end\n\n", "\n\n", ""), ("x\n", "\n---\n", "---\n")],
)
def test_the_separator_is_completed_not_repeated(tail, separator, added):
    assert completion(tail, separator) == added


def test_a_text_and_a_corpus_are_both_sources_and_record_themselves(tree, monkeypatch):
    from charlstm.data.source import Source
    from charlstm.data.text import TextSource, TextStats

    monkeypatch.chdir(tree)
    members = set(Source.__annotations__) | {n for n in vars(Source) if not n.startswith("_")}
    assert {"name", "stem", "chunks", "sections", "record", "adopt", "files_info"} <= members
    text, corpus = TextSource.from_file("a.txt"), Corpus(["a.txt", "b.txt"], val_files=["b.txt"])
    for source in (text, corpus):
        assert all(hasattr(source, name) for name in members), type(source).__name__
    stats = TextStats()
    assert [len(list(section)) for section in text.sections(stats)] == [1] and stats.sha256 == text.sha256()
    assert text.record(stats)["files"] == [
        {"path": str((tree / "a.txt").resolve()), "name": "a.txt", "size": (tree / "a.txt").stat().st_size, "sha256": stats.sha256}
    ]
    assert text.files_info(0.1) == {}
    assert corpus.files_info(0.1) == {"files": 2, "skipped": 0, "validation": "files b.txt"}
    stats = TextStats()
    assert len(corpus.sections(stats)) == 2 and [len("".join(s)) > 0 for s in corpus.sections(stats)] == [True, True]
    record = corpus.record(stats)
    assert record["separator"] == "\n\n" and record["val_files"] == [str((tree / "b.txt").resolve())]
    again = Corpus(["a.txt", "b.txt"], val_files=["b.txt"])
    again.separator = "changed"
    again.adopt({**record, "separator": "\n---\n"}, "replace")  # the run's separator: none given now
    assert again.separator == "\n---\n" and again.encoding_errors == "replace"
    with pytest.raises(DataError, match="^b.txt: this file has changed since the run started"):
        Corpus(["a.txt", "b.txt"]).adopt({**record, "files": [record["files"][0], record["files"][0]]}, "strict")


def test_files_are_streamed_with_one_blank_line_between(tree, monkeypatch):
    monkeypatch.chdir(tree)
    corpus = Corpus(expand_paths(["a.txt", "b.txt", "notes/c.md"]))
    a, b, c = ((tree / n).read_text() for n in ("a.txt", "b.txt", "notes/c.md"))
    text = corpus.read()
    assert text == a + "\n" + b + "\n\n" + c  # a ends in one newline; b in none
    assert corpus.file_stats["b.txt"].chars == len(b)


def test_train_on_many_files_records_each_and_resume_names_a_changed_one(tree, monkeypatch):
    monkeypatch.chdir(tree)
    run = tree / "run"
    result = invoke("train", "a.txt", "b.txt", "notes/", "notes/**/*.md", "--out", run, *TINY_MODEL, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert "corpus 4 files  validation: the last 10% of the joined text" in result.stderr
    record = json.loads((run / "config.json").read_text())["corpus"]
    assert [f["name"] for f in record["files"]] == ["a.txt", "b.txt", "notes/c.md", "notes/sub/d.txt"]
    assert record["files"][1]["size"] == (tree / "b.txt").stat().st_size
    assert record["files"][1]["sha256"] == __import__("hashlib").sha256((tree / "b.txt").read_bytes()).hexdigest()
    resumed = invoke("train", "--resume", run, "--max-steps", "3")
    assert resumed.exit_code == 0, resumed.output
    with open(tree / "notes" / "c.md", "a") as f:
        f.write("one more line\n")
    refused = invoke("train", "--resume", run, "--max-steps", "4")
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: {tree / 'notes' / 'c.md'}: this file has changed since the run started (its SHA-256 "
        "differs), so resuming would not continue the same data; start a new run on it instead\n"
    )


def test_validation_on_whole_files(tree, monkeypatch):
    monkeypatch.chdir(tree)
    run = tree / "run"
    result = invoke("train", "a.txt", "b.txt", "notes", "--val-files", "notes/c.md", "--out", run, *TINY_MODEL, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert "corpus 4 files  validation: files notes/c.md" in result.stderr
    from charlstm.runs.directory import validation_text

    assert validation_text(run) == (tree / "notes" / "c.md").read_text()
    info = json.loads((run / "config.json").read_text())["info"]
    assert info["val_tokens"] == len((tree / "notes" / "c.md").read_text())


def test_a_bad_file_among_many_is_named_or_skipped(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "notes" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    (tree / "notes" / "empty.txt").write_bytes(b"")
    args = ["train", "a.txt", "notes", "--out", tree / "run", *TINY_MODEL, "--max-steps", "2"]
    result = invoke(*args)
    assert result.exit_code == 1 and not (tree / "run").exists()
    assert result.stderr == "Error: notes/empty.txt: the file is empty; give a text file with some content\n"
    result = invoke(*args, "--skip-bad-files")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[:3] == [
        "warning: skipped notes/empty.txt: the file is empty; give a text file with some content",
        "warning: skipped notes/latin1.txt: not valid UTF-8 (byte 0xe9 at byte offset 3); convert it to "
        "UTF-8, or pass --encoding-errors replace to replace invalid bytes with U+FFFD",
        "skipped 2 bad file(s) of 5",
    ]
    assert "corpus 3 files (2 skipped)" in result.stderr
    skipped = json.loads((tree / "run" / "config.json").read_text())["corpus"]["skipped"]
    assert [s["path"] for s in skipped] == ["notes/empty.txt", "notes/latin1.txt"]


def test_an_empty_pattern_or_directory_is_one_clear_line(tree, monkeypatch):
    monkeypatch.chdir(tree)
    (tree / "empty").mkdir()
    result = invoke("train", "a.txt", "poems/*.md")
    assert result.exit_code == 1 and result.stderr == "Error: poems/*.md: no file matches this pattern\n"
    result = invoke("train", "a.txt", "empty")
    assert result.exit_code == 1 and result.stderr.startswith("Error: empty: is a directory with no text files")


def test_a_separator_is_read_with_escapes_and_kept_on_resume(tree, monkeypatch):
    monkeypatch.chdir(tree)
    run = tree / "run"
    result = invoke("train", "a.txt", "b.txt", "--separator", "\\n---\\n", "--out", run, *TINY_MODEL, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["corpus"]["separator"] == "\n---\n"
    from charlstm.data.corpus import Corpus

    assert Corpus(["a.txt", "b.txt"], separator="\n---\n").read() == (tree / "a.txt").read_text() + "---\n" + (tree / "b.txt").read_text()
    # The files given again (say, moved): joined as the run joined them, the token file reused.
    resumed = invoke("train", "a.txt", "b.txt", "--resume", run, "--max-steps", "3")
    assert resumed.exit_code == 0, resumed.output
    assert f"(reused {run / 'tokens.bin'})" in resumed.stderr
