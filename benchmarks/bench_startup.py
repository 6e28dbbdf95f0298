"""Start-up: wall time of `charlstm --help`, each command's --help, and a cold `charlstm sample`.

Each command runs as a fresh process, --rounds times; min/median/max are reported.

    python benchmarks/bench_startup.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, print_table, stats, write_json  # noqa: E402


def wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "charlstm", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        # A default-size model on the built-in corpus, one step: enough for a real checkpoint.
        subprocess.run(
            [sys.executable, "-m", "charlstm", "train", "--out", str(run), "--max-steps", "1"],
            check=True,
            capture_output=True,
        )
        commands = {
            "charlstm --help": ["--help"],
            "charlstm train --help": ["train", "--help"],
            "charlstm sample --help": ["sample", "--help"],
            "charlstm eval --help": ["eval", "--help"],
            "charlstm sample RUN --length 200": ["sample", str(run), "--length", "200", "--seed", "0"],
        }
        times = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, argv in commands.items():
                times[name].append(wall(argv))
    rows = [(k, *(f"{stats(v)[s]:.3f}" for s in ("min", "median", "max"))) for k, v in times.items()]
    print_table(f"start-up, seconds of wall time ({args.rounds} rounds)", rows, ("", "min", "median", "max"))
    write_json(args.json, {"machine": machine(), "seconds": {k: stats(v) for k, v in times.items()}})


if __name__ == "__main__":
    main()
