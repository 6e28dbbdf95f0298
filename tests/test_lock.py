import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from charlstm.cli import cli
from charlstm.config import ModelShape, TrainConfig
from charlstm.errors import ConfigError, DataError, RunLockedError
from charlstm.runs.lock import LOCK, RunLock
from charlstm.data.text import TextSource
from charlstm.training.trainer import resume, train
from tests.conftest import TINY_MODEL

HOST = socket.gethostname()
TINY = dict(batch_size=4, bptt=16, device="cpu", seed=1)
SHAPE = ModelShape(embedding_dim=16, hidden_size=32, num_layers=1)


def _busy_message(run_dir, pid):
    return (
        f"{run_dir}: another charlstm process (pid {pid} on host {HOST}) is training this run; "
        "wait for it to finish or stop it"
    )


def _start(args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "charlstm", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def test_a_second_lock_names_the_holder_and_the_first_release_frees_it(tmp_path):
    first = RunLock().acquire(tmp_path)
    assert json.loads((tmp_path / LOCK).read_text()) == {"pid": os.getpid(), "host": HOST}
    with pytest.raises(RunLockedError) as refused:
        RunLock().acquire(tmp_path)
    assert str(refused.value) == _busy_message(tmp_path, os.getpid())
    first.release()
    assert not (tmp_path / LOCK).exists()
    with RunLock().acquire(tmp_path) as again:
        assert again.held
    assert not again.held and not (tmp_path / LOCK).exists()


def test_a_lock_file_left_by_a_dead_process_does_not_block(tmp_path):
    (tmp_path / LOCK).write_text(json.dumps({"pid": 999999, "host": HOST}))  # nobody holds it
    with RunLock().acquire(tmp_path):
        assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()


def test_lock_is_released_after_a_normal_end_and_after_errors(tmp_path, small_text):
    source = TextSource.from_text(small_text, "small", "small")
    run_dir = tmp_path / "run"
    train(source, TrainConfig(max_steps=3, **TINY), SHAPE, out=run_dir)
    assert not (run_dir / LOCK).exists()
    with pytest.raises(ConfigError, match="cannot resume"):  # fails after taking the lock
        resume(run_dir, changes={"hidden_size": 64, "max_steps": 6})
    assert not (run_dir / LOCK).exists()
    with pytest.raises(DataError, match="too short for one batch"):  # fails inside prepare_new
        train(TextSource.from_text("tiny text\n" * 5, "tiny", "tiny"), TrainConfig(**TINY), SHAPE, out=run_dir.parent / "short")
    assert not (tmp_path / "short").exists()
    keep = tmp_path / "existing"
    keep.mkdir()  # not created by train, so it stays (with its token file), without a lock file
    with pytest.raises(DataError, match="too short for one batch"):
        train(TextSource.from_text("tiny text\n" * 5, "tiny", "tiny"), TrainConfig(**TINY), SHAPE, out=keep)
    assert sorted(p.name for p in keep.iterdir()) == ["tokens.bin", "tokens.json"]
    with RunLock().acquire(run_dir):  # free again
        pass


def test_resume_and_new_run_refuse_a_locked_run_before_writing(tmp_path, small_text):
    source = TextSource.from_text(small_text, "small", "small")
    run_dir = tmp_path / "run"
    train(source, TrainConfig(max_steps=3, **TINY), SHAPE, out=run_dir)
    (run_dir / ".tmp-left-by-the-holder").write_bytes(b"x")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with RunLock().acquire(run_dir):
        with pytest.raises(RunLockedError) as refused:
            resume(run_dir, changes={"max_steps": 6})
        assert str(refused.value) == _busy_message(run_dir, os.getpid())
        other = tmp_path / "new"
        other.mkdir()
        with RunLock().acquire(other):
            with pytest.raises(RunLockedError, match="another charlstm process"):
                train(source, TrainConfig(max_steps=3, **TINY), SHAPE, out=other)
            assert [p.name for p in other.iterdir()] == [LOCK]
        after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK}
        assert after == before  # the holder's temporary file and metrics untouched


def test_the_default_run_directory_moves_past_one_being_started(tmp_path, small_text, monkeypatch):
    monkeypatch.chdir(tmp_path)
    busy = tmp_path / "checkpoints" / "small"
    busy.mkdir(parents=True)
    with RunLock().acquire(busy):  # a new run there has not written anything yet
        result = train(TextSource.from_text(small_text, "small", "small"), TrainConfig(max_steps=2, **TINY), SHAPE)
    assert result.run_dir == (tmp_path / "checkpoints" / "small-2").relative_to(tmp_path)


@pytest.mark.slow
def test_two_trainings_of_one_run_at_once(tmp_path, text_file):
    """The second is refused naming the first's pid; the first goes on undisturbed."""
    run_dir = tmp_path / "run"
    first = _start(["train", text_file, "--out", run_dir, *TINY_MODEL, "--max-steps", "1000000", "--eval-every", "5"])
    try:
        _wait_for(run_dir / "last.pt", first)
        second = subprocess.run(
            [sys.executable, "-m", "charlstm", "train", "--resume", str(run_dir), "--max-steps", "1000000"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 1 and second.stdout == ""
        assert second.stderr.strip().splitlines() == [f"Error: {_busy_message(run_dir, first.pid)}"]
        assert first.poll() is None  # still training
    finally:
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 143 and "Traceback" not in stderr, stderr
    from charlstm.runs.checkpoint import load_checkpoint

    step = load_checkpoint(run_dir / "last.pt")["train_state"]["step"]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, step + 1, 5))  # one writer: no record twice or out of order
    assert not (run_dir / LOCK).exists()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes(tmp_path, text_file):
    run_dir = tmp_path / "run"
    proc = _start(["train", text_file, "--out", run_dir, *TINY_MODEL, "--max-steps", "1000000", "--eval-every", "3"])
    _wait_for(run_dir / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert json.loads((run_dir / LOCK).read_text())["pid"] == proc.pid  # left behind, not held
    from charlstm.runs.checkpoint import load_checkpoint

    step = load_checkpoint(run_dir / "last.pt")["train_state"]["step"]
    resumed = subprocess.run(
        [sys.executable, "-m", "charlstm", "train", "--resume", str(run_dir), "--max-steps", str(step + 2)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == step + 2
    assert not (run_dir / LOCK).exists()


@pytest.mark.slow
def test_sample_and_eval_read_a_run_while_it_trains(tmp_path, text_file):
    """Readers take no lock and always see whole checkpoints (each save replaces the file)."""
    run_dir = tmp_path / "run"
    # The trainer on one thread, so that the readers are not starved on a two-core machine.
    one_thread = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = _start(["train", text_file, "--out", run_dir, *TINY_MODEL, "--max-steps", "1000000", "--eval-every", "2"],
                  env=one_thread)
    try:
        _wait_for(run_dir / "best.pt", proc)
        for seed in range(4):
            sampled = CliRunner().invoke(cli, ["sample", str(run_dir), "--length", "20", "--seed", str(seed)])
            assert sampled.exit_code == 0, sampled.output
            assert len(sampled.stdout) == len("\n") + 20
            evaluated = CliRunner().invoke(cli, ["eval", str(run_dir / "last.pt"), str(text_file), "--json"])
            assert evaluated.exit_code == 0, evaluated.output
            assert json.loads(evaluated.stdout)["chars"] == len(text_file.read_text())
        assert json.loads((run_dir / LOCK).read_text())["pid"] == proc.pid  # still the trainer's
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr


@pytest.mark.slow
def test_a_fine_tuned_run_is_locked_too(tmp_path, text_file, tiny_run):
    run_dir = tmp_path / "tuned"
    first = _start(["train", text_file, "--out", run_dir, "--init-from", tiny_run, "--batch-size", "4", "--bptt", "16"]
                   + ["--max-steps", "1000000", "--eval-every", "5"])
    try:
        _wait_for(run_dir / "last.pt", first)
        second = subprocess.run(
            [sys.executable, "-m", "charlstm", "train", "--resume", str(run_dir), "--max-steps", "1000000"],
            capture_output=True, text=True, timeout=300,
        )
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [f"Error: {_busy_message(run_dir, first.pid)}"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143 and not (run_dir / LOCK).exists()
