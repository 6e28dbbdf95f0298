"""The long-range experiment's pictures, on made-up reports (no training)."""

import pytest

from charlstm.analysis.config import ExperimentConfig
from charlstm.display.long_range import print_long_range
from charlstm.analysis.experiment import Report, Result


def _report(**changes):
    config = ExperimentConfig(distances=(10, 30), seeds=2, budget=100, **changes)
    report = Report(config)
    for task in config.tasks:
        for model, cell, _ in config.variants():
            for d in config.distances:
                for seed in range(2):
                    steps = 50 if d == 10 else (150 if model == "GRU" and seed == 0 else None)
                    report.results.append(Result(task, model, cell, d, seed, 64, 21_784, steps, 0.2, 0.5 + seed / 10, 1.0))
    return report


def test_tables_show_solved_seeds_steps_and_the_checks(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per row
    report = _report(tasks=("copy",))
    print_long_range(report)
    out = capsys.readouterr().out
    assert "copy: seeds that solved it" in out and "2/2 · 50 (50–50)" in out
    assert "1/2 · 150 · acc 55.0% (50.0%–60.0%)" in out  # the GRU at d = 30
    assert "doubling check FAILED: 1 of 16 models solved only between 100 and 200 steps: copy GRU d=30 seed 0 (150)" in out
    assert "run again with --budget 200" in out and "still learning: 7 unsolved models" in out
    assert "measured on the recall task, which was not run" in out


@pytest.mark.parametrize("tasks", [("recall", "copy"), ("copy",)])
def test_png_has_a_panel_per_task_and_only_probes_that_were_measured(tmp_path, tasks):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from charlstm.display.long_range import plot_long_range

    report = _report(tasks=tasks)
    if "recall" in tasks:
        report.gradients = {"GRU": {"trained_at": 30, "norms": [(0, 1e-2), (10, 1e-3), (32, 0.0)]}, "RNN": {"trained_at": None, "norms": []}}
    path = tmp_path / "lr.png"
    assert plot_long_range(report, str(path))
    width, _ = Image.open(path).size
    panels = len(tasks) + ("recall" in tasks)  # the gradient panel; no forget gates were measured
    assert width == round(4.6 * panels * 110)
