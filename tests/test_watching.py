"""Watching a run learn: --patience, samples while training, TensorBoard."""

import json
import re
import sys

import pytest
from click.testing import CliRunner

from charlstm.runs.checkpoint import load_checkpoint, stop_reason
from charlstm.cli import cli
from tests.conftest import TINY_MODEL


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"}, **kwargs)


def test_patience_stops_and_is_recorded(tmp_path, text_file):
    run = tmp_path / "run"
    # A learning rate this high makes the validation loss rise after the first evaluations.
    args = ["train", text_file, "--out", run, *TINY_MODEL, "--lr", "3", "--lr-schedule", "constant"]
    result = invoke(*args, "--eval-every", "2", "--max-steps", "200", "--patience", "2")
    assert result.exit_code == 0, result.output
    losses = [json.loads(line)["val_loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    best = losses.index(min(losses))
    assert len(losses) == best + 3  # two evaluations without improvement, then it stopped
    assert "stopped by patience" in result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["status"] == "finished: patience"
    assert stop_reason(load_checkpoint(run / "last.pt")) == "patience"
    bad = invoke("train", text_file, "--patience", "0")
    assert bad.exit_code == 2 and bad.stderr == "Error: --patience must be at least 1 (got 0)\n"


def test_samples_go_under_the_bar_and_into_samples_txt(tmp_path, text_file, small_text):
    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "4", "--eval-every", "2", "--sample-every", "2")
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    samples = (run / "samples.txt").read_text()
    headers = re.findall(r"^--- step (\d+), validation loss (\S+)$", samples, re.M)
    assert headers == [(str(m["step"]), f"{m['val_loss']:.4f}") for m in metrics] and len(headers) == 2
    prime = small_text.split("\n")[0]
    bodies = re.split(r"^--- step \d+, validation loss \S+\n", samples, flags=re.M)[1:]
    assert all(body.startswith(prime) and len(body) == len(prime) + 200 + 2 for body in bodies)
    assert f"--- sample at step 2, validation loss {metrics[0]['val_loss']:.4f}\n{prime}" in result.stderr
    # Not a terminal, no --sample-every: no samples; --no-samples wins over --sample-every.
    quiet = invoke("train", text_file, "--out", tmp_path / "quiet", *TINY_MODEL, "--max-steps", "2")
    off = invoke("train", text_file, "--out", tmp_path / "off", *TINY_MODEL, "--max-steps", "2", "--sample-every", "1", "--no-samples")
    assert quiet.exit_code == off.exit_code == 0
    assert not (tmp_path / "quiet" / "samples.txt").exists() and not (tmp_path / "off" / "samples.txt").exists()


def test_tensorboard_event_files_are_readable(tmp_path, text_file):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = invoke("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "4", "--eval-every", "2", "--tensorboard", "--sample-every", "4")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    tags = events.Tags()
    assert {"loss/train", "loss/validation", "lr", "grad_norm", "tokens_per_s"} <= set(tags["scalars"])
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = events.Scalars("loss/validation")
    assert [e.step for e in val] == [2, 4]
    assert [round(e.value, 4) for e in val] == [round(m["val_loss"], 4) for m in metrics]
    assert "sample/text_summary" in tags["tensors"]


def test_tensorboard_missing_is_one_clear_error(tmp_path, text_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    result = invoke("train", text_file, "--out", tmp_path / "run", *TINY_MODEL, "--max-steps", "2", "--tensorboard")
    assert result.exit_code == 1 and not (tmp_path / "run").exists()
    assert result.stderr == (
        "Error: --tensorboard needs the tensorboard package, which is not installed: pip install tensorboard "
        "(or pip install 'charlstm[tensorboard]'), or leave out --tensorboard\n"
    )


@pytest.mark.slow
def test_a_terminal_gets_a_sample_at_each_evaluation(tmp_path, text_file):
    import os
    import pty
    import subprocess

    run = tmp_path / "run"
    main, secondary = pty.openpty()  # stderr is a terminal, as when someone watches
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", str(text_file), "--out", str(run), *TINY_MODEL,
         "--max-steps", "4", "--eval-every", "2"],
        stdout=subprocess.DEVNULL,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the other end closed
            break
        if not data:
            break
        seen += data
    assert proc.wait(timeout=120) == 0
    os.close(main)
    steps = re.findall(r"^--- step (\d+),", (run / "samples.txt").read_text(), re.M)
    assert steps == ["2", "4"]
    assert b"--- sample at step 4, validation loss" in seen
