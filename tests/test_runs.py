import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from charlstm.runs.directory import prepare_run_dir, source_of, token_file, validation_text
from charlstm.data.text import TextSource
from charlstm.data.tokenizers import CharTokenizer
from tests.conftest import TINY_MODEL, run_cli


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


# ------------------------------------------------ read-only, unwritable and full run directories

def _charlstm(*args, prefix=(), **kwargs):
    return subprocess.run(
        [*prefix, sys.executable, "-m", "charlstm", *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs
    )


def _snapshot(directory):
    return {p: (p.read_bytes() if p.is_file() else None) for p in sorted(directory.rglob("*"))}


def _one_error_line(result):
    assert result.returncode == 1 and result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0][len("Error: ") :]


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finished_run(small_text):
    """A tiny run in a directory every user can read (for the runs as another user; pytest's
    own temporary directories are the owner's only)."""
    root = Path(tempfile.mkdtemp(prefix="charlstm-shared-"))
    os.chmod(root, 0o755)
    text = root / "small.txt"
    text.write_text(small_text)
    result = run_cli("train", text, "--out", root / "run", *TINY_MODEL, "--max-steps", "2")
    assert result.returncode == 0, result.stderr
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield root / "run"
    shutil.rmtree(root)


def _read_only_mount(directory):
    """A command prefix that runs the rest with ``directory`` bind-mounted read-only (a private
    mount namespace: nothing outside the command sees it), or None where that is not allowed."""
    if shutil.which("unshare") is None:
        return None
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
              'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(directory)]
    probe = subprocess.run([*prefix, "touch", str(directory / "probe")], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        return None
    return prefix


@pytest.mark.slow
@pytest.mark.parametrize("command", ["resume", "new run"])
def test_a_read_only_run_directory_is_one_clear_line_and_unchanged(tmp_path, finished_run, command):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    prefix = _read_only_mount(run)
    if prefix is None:
        pytest.skip("no read-only bind mount here (needs unshare and user namespaces)")
    before = _snapshot(run)
    if command == "resume":
        args = ["train", "--resume", run, "--max-steps", "4"]
    else:
        for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt"):
            (run / name).unlink()
        before = _snapshot(run)
        args = ["train", finished_run.parent / "small.txt", "--out", run, *TINY_MODEL, "--max-steps", "2"]
    error = _one_error_line(_charlstm(*args, prefix=prefix))
    assert error == (
        f"{run}: cannot create the lock file .lock (Read-only file system); check that the run directory is writable"
    )
    assert _snapshot(run) == before


@pytest.mark.slow
def test_a_run_directory_without_write_permission_is_one_clear_line_and_unchanged(finished_run):
    """Run as the user nobody (root passes every permission check)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a command as another user")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # The same import path as this process (an install outside a venv may live where nobody cannot read).
    path = os.pathsep.join([str(ROOT), *(entry for entry in sys.path if entry and os.path.isdir(entry))])
    where = {"cwd": "/", "env": dict(os.environ, PYTHONPATH=path)}
    probe = subprocess.run(
        [*as_nobody, sys.executable, "-c", "import click, torch, charlstm.cli"], capture_output=True, **where
    )
    if probe.returncode != 0:
        pytest.skip("the user nobody cannot run this Python with charlstm's dependencies")
    before = _snapshot(finished_run)
    resumed = _charlstm("train", "--resume", finished_run, "--max-steps", "4", prefix=as_nobody, **where)
    assert _one_error_line(resumed) == (
        f"{finished_run}: cannot create the lock file .lock (Permission denied); check that the run directory is "
        "writable"
    )
    inside = finished_run / "new"
    new = _charlstm("train", finished_run.parent / "small.txt", "--out", inside, prefix=as_nobody, **where)
    assert _one_error_line(new) == f"{inside}: cannot create the run directory (Permission denied)"
    assert _snapshot(finished_run) == before
    sample = _charlstm("sample", finished_run, "--length", "5", "--seed", "0", prefix=as_nobody, **where)
    assert sample.returncode == 0 and len(sample.stdout) == 6  # reading needs no write access


def _small_disk(limit):
    def apply():  # writes past ``limit`` bytes fail with EFBIG, as a full disk fails with ENOSPC
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_disk_full_while_writing_the_token_file(tmp_path, text_file):
    run = tmp_path / "run"
    result = _charlstm("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "2", preexec_fn=_small_disk(10_000))
    assert _one_error_line(result) == (
        f"{run / 'tokens.bin'}: cannot write (File too large); nothing was written. Free some disk space, or make "
        "the directory writable, and run again"
    )
    assert not run.exists()  # the run directory it created is removed again
    existing = tmp_path / "existing"
    existing.mkdir()
    result = _charlstm("train", text_file, "--out", existing, *TINY_MODEL, preexec_fn=_small_disk(10_000))
    assert "tokens.bin: cannot write (File too large); nothing was written" in _one_error_line(result)
    assert list(existing.iterdir()) == []  # no temporary, half-written or lock file


@pytest.mark.slow
def test_disk_full_while_writing_config_json(tmp_path, finished_run):
    """A resume rewrites config.json (1.5 KB) after the metrics (under 1 KB)."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _snapshot(run)
    result = _charlstm("train", "--resume", run, "--max-steps", "4", preexec_fn=_small_disk(1000))
    assert _one_error_line(result) == (
        f"{run / 'config.json'}: cannot write (File too large); the previous file is kept. Free some disk space, "
        "or make the directory writable, and run again"
    )
    assert _snapshot(run) == before  # config.json as it was, no temporary or lock file left
