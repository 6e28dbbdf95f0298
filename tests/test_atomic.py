import errno

import pytest

from charlstm.atomic import atomic_write
from charlstm.errors import WriteError


def _full_disk(f):
    f.write(b"half of it")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_is_one_error_naming_the_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "config.json"
    with pytest.raises(WriteError) as e:
        atomic_write(target, _full_disk)
    assert str(e.value) == (
        f"{target}: cannot write (No space left on device); nothing was written. Free some disk space, or make "
        "the directory writable, and run again"
    )
    assert list(tmp_path.iterdir()) == []
    target.write_text("previous")
    with pytest.raises(WriteError, match="the previous file is kept"):
        atomic_write(target, _full_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"] and target.read_text() == "previous"
    assert isinstance(e.value.__cause__, OSError)


def test_a_missing_directory_is_one_error(tmp_path):
    target = tmp_path / "gone" / "x.json"
    with pytest.raises(WriteError) as e:
        atomic_write(target, "{}")
    assert str(e.value).startswith(f"{target}: cannot write (No such file or directory); nothing was written")


def test_a_written_file_gets_the_mode_the_umask_allows(tmp_path):
    import os

    from charlstm.atomic import atomic_write

    for mask, expected in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            path = atomic_write(tmp_path / f"f{mask:o}.txt", "x")
        finally:
            os.umask(old)
        assert oct(path.stat().st_mode & 0o777) == oct(expected)


@pytest.mark.slow  # the real CLI (train, sample, inspect) under each umask
@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_every_file_a_run_writes_follows_the_umask(tmp_path, mask):
    """Checkpoints, config.json, the token file, metrics, samples, the inspect page and
    ``sample --output``: written by the real CLI under two umasks, all readable as the umask allows."""
    import os
    import subprocess
    import sys

    from tests.conftest import TINY_MODEL

    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def cli(*args):
        done = subprocess.run(
            [sys.executable, "-m", "charlstm", *args],
            capture_output=True, text=True, env=env, preexec_fn=lambda: os.umask(mask), timeout=120,
        )
        assert done.returncode == 0, done.stderr

    cli("train", str(text), "--out", str(run), *TINY_MODEL, "--max-steps", "12", "--eval-every", "6",
        "--sample-every", "6", "--device", "cpu")
    cli("sample", str(run), "--length", "20", "--seed", "1", "--output", str(tmp_path / "s.txt"))
    cli("inspect", str(run), str(text), "--html", str(tmp_path / "page.html"))
    files = [p for p in run.rglob("*") if p.is_file()] + [tmp_path / "s.txt", tmp_path / "page.html"]
    names = {p.name for p in files}
    assert {"best.pt", "last.pt", "config.json", "metrics.jsonl", "page.html", "s.txt"} <= names, names
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes
