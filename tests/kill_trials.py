"""Kill ``charlstm train`` with SIGKILL at random moments and check that no checkpoint is lost.

Each trial starts training (the first run, or ``--resume`` of the same run once it has a
checkpoint), checkpointing after every step so that many kills land in the middle of a write,
then sends SIGKILL at a random moment. After every kill, every checkpoint in the run directory
must load (checksum included); temporary files an interrupted write left behind are counted, and
the next run must remove them. The last trial lets training finish normally.

    python3 -m tests.kill_trials --trials 50          # from the repository root
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A cheap step and a small validation split, but a few MB of weights and optimizer state: most of
# the time goes into writing checkpoints, so many kills land in the middle of one.
MODEL = ["--embedding-dim", "16", "--hidden-size", "256", "--num-layers", "1", "--batch-size", "4"]
MODEL += ["--bptt", "16", "--val-fraction", "0.02", "--eval-every", "1"]


def run_trials(trials: int, seed: int = 0, max_delay: float = 4.0, workdir: Path | None = None) -> dict:
    from charlstm.runs.checkpoint import load_checkpoint
    from charlstm.data.text import builtin_text
    from charlstm.errors import CharlstmError

    rng = random.Random(seed)
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="charlstm-kill-")) if own_dir else workdir
    text = workdir / "text.txt"
    text.write_text(builtin_text()[:50_000])
    run_dir = workdir / "run"
    counts = {
        "trials": 0,
        "killed": 0,
        "killed_mid_write": 0,  # a temporary checkpoint file was there after the kill
        "checkpoints_checked": 0,
        "checkpoints_bad": 0,
        "temp_files_left": 0,
        "temp_files_cleaned_next_run": 0,
        "resumed": 0,
        "failed_starts": 0,
        "final_target": None,
        "final_step": None,
    }
    try:
        for trial in range(trials):
            last = trial == trials - 1
            leftovers = set(run_dir.glob(".tmp-*")) if run_dir.exists() else set()
            resuming = (run_dir / "last.pt").is_file()
            if resuming:
                args = ["train", "--resume", run_dir]
                counts["resumed"] += 1
            else:  # killed before its first checkpoint: start again
                shutil.rmtree(run_dir, ignore_errors=True)
                args = ["train", text, "--out", run_dir, *MODEL]
            if last:  # let it finish: 20 more steps
                done = load_checkpoint(run_dir / "last.pt")["train_state"]["step"] if resuming else 0
                counts["final_target"] = done + 20
                args += ["--max-steps", done + 20]
            proc = subprocess.Popen(
                [sys.executable, "-m", "charlstm", *map(str, args)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            counts["trials"] += 1
            if last:
                _, stderr = proc.communicate(timeout=600)
                if proc.returncode != 0:
                    counts["failed_starts"] += 1
                    print(stderr, file=sys.stderr)
            else:
                try:
                    proc.wait(timeout=rng.uniform(1.0, max_delay))
                    counts["failed_starts"] += 1  # it should still be training
                    print(proc.stderr.read(), file=sys.stderr)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    counts["killed"] += 1
                proc.stderr.close()
            counts["temp_files_cleaned_next_run"] += sum(1 for p in leftovers if not p.exists())
            temps = list(run_dir.glob(".tmp-*")) if run_dir.exists() else []
            counts["temp_files_left"] += len(temps)
            counts["killed_mid_write"] += any(p.suffix == ".pt" for p in temps)
            for checkpoint in [run_dir / "best.pt", run_dir / "last.pt"]:
                if not checkpoint.exists():
                    continue
                counts["checkpoints_checked"] += 1
                try:
                    load_checkpoint(checkpoint)
                except CharlstmError as e:
                    counts["checkpoints_bad"] += 1
                    print(f"trial {trial}: {e}", file=sys.stderr)
            if last and (run_dir / "last.pt").is_file():
                counts["final_step"] = load_checkpoint(run_dir / "last.pt")["train_state"]["step"]
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    counts = run_trials(args.trials, args.seed)
    counts["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(counts, indent=2))
    ok = (
        counts["checkpoints_bad"] == 0
        and counts["failed_starts"] == 0
        and counts["final_step"] == counts["final_target"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
