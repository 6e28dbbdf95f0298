"""benchmarks/gpu_check.py --device cpu --quick: the GPU check cannot rot while no GPU is at hand.

It runs the whole check on the CPU with tiny shapes and a 5-second training run, and the report
must have every key the GPU run fills. A part may run out of its time on a loaded machine
(``timeout``); none may fail.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ["machine", "cuda_tests", "throughput", "quality", "sampling", "long_range"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--device", "cpu", "--quick"],
        capture_output=True, text=True, timeout=400, cwd=ROOT, env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpu_check on cpu (quick)" in done.stdout
    assert (out / "log.txt").read_text().count("--- ") == len(PARTS)  # every part, in its own section
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_the_report_has_every_part_and_its_figures(report):
    assert report["device"] == "cpu" and report["quick"] is True and report["schema"] == 1
    assert list(report["parts"]) == PARTS
    for name in PARTS:
        assert report[name]["status"] in ("ok", "timeout"), (name, report[name])
        assert report[name]["seconds"] <= report[name]["limit_s"] + 5
    assert report["wall_s"] <= report["deadline_s"] + 10

    machine = report["machine"]
    assert {"cpu", "torch", "torch_cuda", "cudnn", "cuda_available", "missing_packages"} <= set(machine)
    assert machine["precision_auto"]["description"].startswith(("bf16 autocast", "fp32"))

    tests = report["cuda_tests"]
    assert tests["status"] == "ok" and tests["failures"] == [] and tests["failed"] == 0
    if not machine["cuda_available"]:
        assert tests["skipped"] == 13 and tests["passed"] == 0  # every test in tests/test_cuda.py

    assert set(report["goals"]) == {
        "train_step_ratio_reference_worst", "train_step_ratio_all_worst", "nats_per_char_180s", "samples_64_vs_1"
    }
    assert all(set(g) == {"value", "goal", "met"} for g in report["goals"].values())


@pytest.mark.slow
def test_the_measured_parts_say_what_they_measured(report):
    rows = report["throughput"].get("rows", [])
    if report["throughput"]["status"] == "ok":
        assert [(r["shape"], r["precision"]) for r in rows] == [
            (shape, precision) for shape in ("reference", "gpu") for precision in ("fp32", "tf32", "bf16", "fp16")
        ] + [("defaults", "fp32")]
    for row in rows:
        assert "skipped" in row or {
            "charlstm_tokens_per_s", "bare_tokens_per_s", "ratio", "charlstm_syncs_per_step", "bare_syncs_per_step"
        } <= set(row), row
        if "skipped" not in row:
            assert row["charlstm_syncs_per_step"] is None  # counted on a GPU only
    if report["quality"]["status"] == "ok":
        quality = report["quality"]
        assert quality["goal"] == 1.45 and quality["budget_s"] == 5.0 and quality["met"] is False
        assert 0 < quality["eval_nats_per_char"] < 6 and quality["eval_chars"] > 1000
        assert report["goals"]["nats_per_char_180s"]["value"] == quality["eval_nats_per_char"]
    if report["sampling"]["status"] == "ok":
        sampling = report["sampling"]
        assert sampling["chars_per_s_1"] > 0 and sampling["chars_per_s_64"] > 0
        assert sampling["ratio_64_to_1"] == pytest.approx(sampling["chars_per_s_64"] / sampling["chars_per_s_1"], rel=0.02, abs=0.006)  # rounded
    if report["long_range"]["status"] == "ok":
        assert report["long_range"]["exit_status"] == 0 and report["long_range"]["wall_s"] > 0
