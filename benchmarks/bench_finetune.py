"""Fine-tuning against training from scratch, at the same number of steps on a second text.

A base model is trained on one text; then, on a second, different text, one run starts from the
base model (``--init-from``) and one from random weights, with the same settings and the same
number of steps. Each is scored with ``charlstm eval`` on the second text's held-out last tenth
(what both validated on), next to the base model itself (no training on the second text).

    python benchmarks/bench_finetune.py                # ~10 min of CPU on 2 cores: the figures in docs/training.md
    python benchmarks/bench_finetune.py --quick        # seconds, tiny models (the test suite runs it)

Full: base on the test data's shakespeare_complete.txt (5 MB), --tokenizer byte (so no text has
unknown characters and the comparison is fair), the CLI's default model; second text: the
built-in corpus (the Python Language Reference). Quick: tiny models, base on the first 60,000
characters of the built-in corpus, second text a later 12,000 characters of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import SHARED_DATA, charlstm, machine, print_table, write_json  # noqa: E402

TINY = "--embedding-dim 16 --hidden-size 32 --num-layers 1 --batch-size 4 --bptt 16".split()
# The schedule and (full mode) the model the README's figures were measured with: the defaults
# before 1 x 512 became the default (2 x 256, dropout 0.1, batch 32, lr 4e-3, cosine to lr/10).
SCHEDULE = "--lr 4e-3 --final-lr-ratio 0.1".split()
FULL_MODEL = "--num-layers 2 --hidden-size 256 --dropout 0.1 --batch-size 32".split()


def run(quick: bool, base_steps: int, steps: int, tmp: Path) -> dict:
    from charlstm.runs.directory import validation_text
    from charlstm.data.text import builtin_text

    log: list[str] = []
    if quick:
        text = builtin_text()
        base_text, second_text = tmp / "base.txt", tmp / "second.txt"
        base_text.write_text(text[:60_000])
        second_text.write_text(text[300_000:312_000])
        model, second = TINY, [second_text]
        base_args = [base_text, *model, *SCHEDULE, "--max-steps", base_steps, "--eval-every", base_steps]
    else:
        base_text = SHARED_DATA / "shakespeare_complete.txt"
        if not base_text.is_file():
            sys.exit(f"{base_text} is not here; the full benchmark needs it (--quick does not)")
        model, second = ["--tokenizer", "byte", *FULL_MODEL], []  # no FILE: the built-in corpus
        base_args = [base_text, *model, *SCHEDULE, "--max-steps", base_steps, "--eval-every", base_steps, "--eval-tokens", 100_000]
    charlstm(["train", *base_args, "--out", tmp / "base", "--device", "cpu"], log)
    common = ["--val-fraction", "0.1", *SCHEDULE, "--max-steps", steps, "--eval-every", max(1, steps // 3), "--device", "cpu"]
    charlstm(["train", *second, *model, *common, "--out", tmp / "scratch"], log)
    charlstm(["train", *second, "--init-from", tmp / "base", *common, "--out", tmp / "finetune"], log)
    held_out = tmp / "last_tenth.txt"
    held_out.write_text(validation_text(tmp / "scratch"))
    results = {}
    for name in ("base", "scratch", "finetune"):
        report = json.loads(charlstm(["eval", tmp / name, held_out, "--json", "--device", "cpu"], log))
        results[name] = report
    return {"commands": log, "results": results, "base_steps": base_steps, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, seconds")
    parser.add_argument("--base-steps", type=int, help="[default: 600, quick: 150]")
    parser.add_argument("--steps", type=int, help="steps on the second text [default: 300, quick: 20]")
    parser.add_argument("--json")
    args = parser.parse_args()
    base_steps = args.base_steps or (150 if args.quick else 600)
    steps = args.steps or (20 if args.quick else 300)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(args.quick, base_steps, steps, Path(tmp))
    print("\n".join(report["commands"]))
    labels = {
        "base": f"base model only ({base_steps} steps on the first text)",
        "scratch": f"from scratch, {steps} steps",
        "finetune": f"fine-tuned from the base, {steps} steps",
    }
    rows = [
        (labels[name], f"{r['loss']:.4f}", f"{r['bits_per_char']:.4f}", f"{r['bits_per_byte']:.4f}", f"{r['unknown']:,}")
        for name, r in report["results"].items()
    ]
    print_table(
        "second text, held-out last tenth (charlstm eval)",
        rows,
        ("model", "loss (nats/token)", "bits/char", "bits/byte", "unknown"),
    )
    write_json(args.json, {"machine": machine(), **report})


if __name__ == "__main__":
    main()
