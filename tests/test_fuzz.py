"""The fuzz harnesses (tests/fuzz/) in their short mode: a few hundred inputs each, from a fixed
seed, every one ending in a result or one CharlstmError. Skipped without atheris (an optional
dependency: pip install -e '.[fuzz]'). The long mode: python -m tests.fuzz.fuzz_checkpoint --long 180
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")
pytestmark = pytest.mark.slow  # each harness runs hundreds of inputs in a process of its own

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("harness, runs", [("fuzz_text", 2000), ("fuzz_tokenizers", 1000), ("fuzz_checkpoint", 150), ("fuzz_decompress", 200)])
def test_short_fuzz_run_finds_nothing(tmp_path, harness, runs):
    result = subprocess.run(
        [sys.executable, "-m", f"tests.fuzz.{harness}", "--short"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"CHARLSTM_FUZZ_ARTIFACTS": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Done {runs} runs" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no crash-*, timeout-* or oom-* input saved
