"""What ``charlstm train`` shows while it trains (``charlstm.display.training``): a bar for each
validation, the bar current after each validation and at the end, a time bar under --max-time,
and a summary whose tokens/s counts training alone."""

import io
import json
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import TINY_MODEL, run_cli


def _bar_lines(stderr: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]+", stderr) if "|" in line]


@pytest.mark.slow
def test_a_max_time_run_shows_a_full_time_bar_and_current_losses(tmp_path, text_file):
    run = tmp_path / "run"
    result = run_cli("train", text_file, "--out", run, *TINY_MODEL, "--max-time", "6", "--epochs", "1000", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) >= 3
    bars = _bar_lines(result.stderr)
    last = [b for b in bars if " s, loss" in b][-1]  # the time bar as the run ended
    assert last.startswith("100%|") and "6/6 s" in last, last
    assert f"val {metrics[-1]['val_loss']:.3f}" in last and "val -" not in last
    assert re.search(r"tokens/s\W+[\d,]+ \(training steps only\)", result.stderr)
    assert re.search(r"time\W+00:0[0-6] of the 00:06 budget", result.stderr), result.stderr


def test_a_step_bar_ends_with_the_last_loss_and_validation(tmp_path, text_file):
    run = tmp_path / "run"
    result = run_cli("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "6", "--eval-every", "3")
    assert result.returncode == 0, result.stderr
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [b for b in _bar_lines(result.stderr) if "/6 steps [" in b][-1]
    assert last.startswith("100%|") and f"val {metrics[-1]['val_loss']:.3f}" in last, last
    assert "validating at step" not in result.stderr  # a log shows a validation only once it has taken 10 s


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_validation_has_its_own_bar_and_the_bar_stays_current(monkeypatch):
    from charlstm.display.training import TrainBar

    out = _Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    bar = TrainBar()
    bar.on_start(SimpleNamespace(planned_steps=10, resumed_from_step=None, max_time=None))
    bar.on_step(1, torch.tensor(3.25), 1000.0, 0.1)
    bar.on_step(2, torch.tensor(2.5), 1000.0, 0.2)
    bar.on_validation_start(2, 4_000)
    bar.on_validation_progress(1_000)
    bar.validation.refresh()
    assert "validating at step 2:  25%" in out.getvalue()
    bar.on_eval({"step": 2, "time": 0.3, "val_loss": 2.75})
    assert "loss 2.500, val 2.750" in out.getvalue().rsplit("\r", 1)[-1]  # at once, not at the next step
    bar.on_step(3, torch.tensor(2.25), 1000.0, 0.4)  # within 0.5 s of the last update: not shown yet
    bar.on_end(SimpleNamespace(last_val_loss=2.625, stop_reason="patience"))
    last = out.getvalue().rsplit("\r", 1)[-1]
    assert last.startswith("100%") and "3/3" in last and "loss 2.250, val 2.625" in last, last
