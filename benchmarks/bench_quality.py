"""Quality per minute: validation loss against wall-clock time for a time-limited char run.

Trains with the CLI's default model and schedule (unless overridden) on tinyshakespeare
(../shared/data, 90/10 split, char level) for --max-time seconds and prints the validation-loss
curve from the run's metrics.

    python benchmarks/bench_quality.py [--max-time 300] [--eval-every 250] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, machine, print_table, write_json  # noqa: E402

from charlstm.config import TrainConfig  # noqa: E402
from charlstm.text import TextSource  # noqa: E402
from charlstm.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-time", type=float, default=300.0)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--json")
    args = parser.parse_args()
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        sys.exit(f"{path} is not here; this benchmark needs tinyshakespeare")
    config = TrainConfig(max_time=args.max_time, eval_every=args.eval_every, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        result = train(TextSource.from_file(path), config, out=Path(tmp) / "run")
    rows = [
        (f"{m['time']:.0f}", m["step"], f"{m['val_loss']:.4f}", f"{m['tokens_per_s']:,.0f}")
        for m in result.metrics
    ]
    print_table(
        f"validation loss (nats/char) against time, --max-time {args.max_time:g}, defaults {config.batch_size}x{config.bptt}",
        rows,
        ("seconds", "step", "val loss", "tokens/s"),
    )
    print(f"\nbest validation loss {result.best_val_loss:.4f} after {result.elapsed:.0f} s")
    write_json(
        args.json, {"machine": machine(), "metrics": result.metrics, "best_val_loss": result.best_val_loss}
    )


if __name__ == "__main__":
    main()
