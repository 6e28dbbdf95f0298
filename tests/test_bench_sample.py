"""``benchmarks/bench_sample.py --quick`` runs end to end and reports every row it promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_sample.py"


@pytest.mark.slow
def test_bench_sample_quick(tmp_path):
    out = tmp_path / "sample.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert set(result["rates"]) == {
        "charlstm generate, fp32",
        "charlstm generate, int8",
        "charlstm generate, bf16",
        "plain loop, nn.LSTM, oneDNN on (default)",
        "plain loop, nn.LSTM, oneDNN off",
        "plain loop, torch.lstm_cell",
        "floor: addmm (1 x E+H) @ (E+H x 4H), fp32",
        "charlstm generate, fp32, --regex (letters and punctuation)",
    }
    assert set(result["streams"]) == {f"{n} streams, {w}" for w in ("fp32", "int8") for n in (1, 4, 16, 64)}
    assert set(result["weights"]) == {"fp32", "int8", "bf16"}
    assert result["weights"]["fp32"]["cost_nats_per_char"] == 0.0
    assert all(abs(v["cost_nats_per_char"]) < 0.1 for v in result["weights"].values())
    assert all(r["median"] > 0 for r in result["rates"].values())
    assert "chat: Enter to first character, ms" in done.stdout
