"""Quality per time budget, and what dynamic evaluation adds.

For each budget (``--budgets``, seconds) and each recipe, train on the whole corpus through the
real CLI, with its own ``--val-fraction 0.1`` holding out the last tenth, then score that tenth
with ``charlstm eval`` (static, and with ``--adapt`` when asked):

    auto   charlstm train CORPUS --max-time T                (the default: --size auto)
    fixed  charlstm train CORPUS --max-time T --size fixed   (the default shape, not sized)

    python benchmarks/bench_quality.py                                  # 60, 300, 1800 s
    python benchmarks/bench_quality.py --budgets 300 --recipes auto --seeds 1337,7 --adapt
    python benchmarks/bench_quality.py --corpus other.txt --budgets 300 --adapt --json out.json
    python benchmarks/bench_quality.py --short                          # a few seconds (the suite)

Every figure printed comes from the run it names; the machine is printed with them. Runs are
sequential: never time two at once on a small machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_DATA, machine, print_table, write_json  # noqa: E402

RECIPES = {"auto": [], "fixed": ["--size", "fixed"]}


def charlstm(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "charlstm", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"charlstm {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result


def one_run(corpus: Path, budget: float, recipe: str, seed: int, adapt: bool, tmp: Path, extra: list[str]) -> dict:
    from charlstm.runs.directory import validation_text

    run_dir = tmp / f"{recipe}-{budget:g}-{seed}"
    charlstm("train", str(corpus), "--out", str(run_dir), "--max-time", f"{budget:g}", "--seed", str(seed),
             "--no-samples", *RECIPES[recipe], *extra)
    config = json.loads((run_dir / "config.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    held_out = tmp / f"held-out-{run_dir.name}.txt"
    held_out.write_text(validation_text(run_dir), encoding="utf-8")
    report = json.loads(charlstm("eval", str(run_dir), str(held_out), "--json", *(["--adapt"] if adapt else [])).stdout)
    model = config["model"]
    return {
        "budget": budget,
        "recipe": recipe,
        "seed": seed,
        "shape": f"{model['num_layers']}x{model['hidden_size']}",
        "dropout": model["dropout"],
        "batch_size": config["train"]["batch_size"],
        "parameters": config["info"]["num_parameters"],
        "size": config["info"].get("size"),
        "steps": metrics[-1]["step"],
        "tokens_per_s": metrics[-1]["tokens_per_s"],
        "best_val_loss": min(m["val_loss"] for m in metrics),
        "eval_chars": report["chars"],
        "eval_nats_per_char": report["bits_per_char"] * 0.6931471805599453,
        "eval_seconds": report["seconds"],
        "adapted_nats_per_char": report["adapted"]["bits_per_char"] * 0.6931471805599453 if adapt else None,
        "adapt_seconds": report["adapted"]["seconds"] if adapt else None,
        "curve": [(m["time"], m["val_loss"]) for m in metrics],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=SHARED_DATA / "tinyshakespeare.txt")
    parser.add_argument("--budgets", default="60,300,1800", help="seconds, comma-separated")
    parser.add_argument("--recipes", default="auto,fixed", help="auto and/or fixed")
    parser.add_argument("--seeds", default="1337", help="comma-separated")
    parser.add_argument("--adapt", action="store_true", help="also charlstm eval --adapt")
    parser.add_argument("--short", action="store_true", help="2-second runs on the built-in corpus (a smoke test)")
    parser.add_argument("--json")
    args = parser.parse_args()
    budgets = [float(b) for b in args.budgets.split(",")]
    extra: list[str] = []
    if args.short:
        budgets, extra = [2.0], ["--eval-every", "20"]
    recipes = args.recipes.split(",")
    for recipe in recipes:
        if recipe not in RECIPES:
            sys.exit(f"--recipes: unknown recipe {recipe!r} (auto, fixed)")
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        corpus = args.corpus
        if args.short:
            from charlstm.data.text import builtin_text

            corpus = Path(tmp) / "builtin.txt"
            corpus.write_text(builtin_text()[:200_000], encoding="utf-8")
        elif not corpus.is_file():
            sys.exit(f"{corpus} is not here; this benchmark needs a corpus (--corpus)")
        results = [
            one_run(corpus, budget, recipe, int(seed), args.adapt, Path(tmp), extra)
            for budget in budgets
            for recipe in recipes
            for seed in args.seeds.split(",")
        ]
    print(f"corpus {corpus.name if not args.short else 'built-in (first 200,000 characters)'}; machine {machine()}")
    rows = [
        (
            f"{r['budget']:g}", r["recipe"], r["seed"], f"{r['shape']} d{r['dropout']:g} b{r['batch_size']}",
            f"{r['parameters']:,}", r["steps"], f"{r['tokens_per_s']:,.0f}", f"{r['best_val_loss']:.4f}",
            f"{r['eval_nats_per_char']:.4f}",
            "-" if r["adapted_nats_per_char"] is None else f"{r['adapted_nats_per_char']:.4f} ({r['adapt_seconds']:.0f} s)",
        )
        for r in results
    ]
    print_table(
        "held-out last tenth, nats/char (charlstm eval; adapted: charlstm eval --adapt, its time)",
        rows,
        ("budget s", "recipe", "seed", "shape", "params", "steps", "tok/s", "best val", "eval", "adapted"),
    )
    for r in results:
        if r["size"]:
            print(f"{r['budget']:g} s {r['recipe']}: size {r['size']}")
    write_json(args.json, {"machine": machine(), "corpus": str(corpus), "results": results})


if __name__ == "__main__":
    main()
