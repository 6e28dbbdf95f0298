"""``benchmarks/bench_compress.py --quick`` runs end to end (~8 s) and reports every figure it promises."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_compress.py"


def test_bench_compress_quick(tmp_path):
    out = tmp_path / "compress.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--texts", "log", "--json", str(out), "--keep", str(tmp_path / "kept")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "beats xz" in done.stdout
    results = json.loads(out.read_text())["results"]
    assert [r["text"] for r in results] == ["log"]
    for row in results:
        assert row["xz -9e"] > 0
        (run,) = row["runs"]
        figures = [run[k] for k in ("static", "adapt", "cache", "adapt + cache")]
        assert all(0 < f < 16 for f in figures)
        assert run["cache"] < run["static"]  # a log repeats itself
        static = run["compress_static"]
        assert set(static) == {"int8", "fp32"} and all(c["round_trip"] for c in static.values())
        assert abs(static["fp32"]["eval"] / run["static"] - 1) < 0.01  # eval's static figure (no context here)
        assert abs(static["int8"]["eval"] / static["fp32"]["eval"] - 1) < 0.02
    # --static --reuse: the kept text and run, static coding alone, nothing trained again
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--texts", "log", "--static", "--reuse", str(tmp_path / "kept"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "int8 (default)" in done.stdout and "beats xz" not in done.stdout
    data = json.loads(out.read_text())
    (run,) = data["results"][0]["runs"]
    assert run["train_s"] is None and "adapt" not in run and set(run["compress_static"]) == {"int8", "fp32"}
    assert not any(" train " in command for command in data["commands"])
