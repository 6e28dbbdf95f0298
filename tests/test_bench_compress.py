"""``benchmarks/bench_compress.py --quick`` runs end to end (~8 s) and reports every figure it promises."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_compress.py"


def test_bench_compress_quick(tmp_path):
    out = tmp_path / "compress.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--texts", "log", "--json", str(out)],
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
