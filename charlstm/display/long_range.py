"""The long-range experiment on a terminal and in a PNG: a progress bar while models train, then
one table per task (seeds that solved it, steps to solve, accuracy), the doubling check, the
gradient norms and the forget gates of the LSTM that remembers."""

from __future__ import annotations

import math
import statistics
import sys

from charlstm.atomic import atomic_write
from charlstm.display.consoles import stderr_console, stdout_console


def print_start(config, jobs: int, workers: int, device: str) -> None:
    where = f"{workers} processes of one thread" if device == "cpu" and workers > 1 else device
    kind = "a curriculum per seed" if config.curriculum else "one model per distance and seed"
    stderr_console().print(
        f"long-range: tasks {', '.join(config.tasks)}; distances {', '.join(map(str, config.distances))}; "
        f"{config.seeds} seeds; {kind}; budget {config.budget:,} steps, doubled to {2 * config.budget:,} for "
        f"the check; {jobs} models on {where}",
        markup=False,
        soft_wrap=True,
    )


class ExperimentProgress:
    """A bar on stderr, one tick per trained model, naming the last one that finished."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="model", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, results) -> None:
        last = results[-1]
        outcome = (
            f"solved in {last.steps:,} steps"
            if last.steps is not None
            else f"not solved ({last.accuracy:.1%})"
        )
        self.bar.set_postfix_str(
            f"{last.task} {last.model} d={last.distance} seed {last.seed}: {outcome}", refresh=False
        )
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _cell(summary: dict) -> str:
    """'3/3 · 250 (200–300)' when solved, then the final accuracy's median and range where not all did."""
    solved, seeds = summary["solved"], summary["seeds"]
    if not seeds:
        return ""
    text = f"{solved}/{seeds}"
    if solved:
        steps = summary["steps"]
        spread = f" ({steps[0]:,}–{steps[-1]:,})" if len(steps) > 1 else ""
        text += f" · {summary['median_steps']:,.0f}{spread}"
    if solved < seeds:
        low, high = summary["accuracy_range"]
        text += f" · acc {summary['median_accuracy']:.1%} ({low:.1%}–{high:.1%})"
    return text


def print_long_range(report) -> None:
    from rich.table import Table

    console, config = stdout_console(), report.config
    budget = config.budget
    for task in config.tasks:
        what = "each answer" if task == "copy" else "the answer"
        table = Table(
            title=f"{task}: seeds that solved it (held-out accuracy on {what} ≥ {config.solved_at:.0%}, checked "
            f"every {config.eval_every} steps, within {2 * budget:,}) · median steps to solve over those seeds "
            "(range) · where not all did, the final accuracy's median (range)",
            title_justify="left",
        )
        for name in ("model", "hidden", "parameters"):
            table.add_column(name, justify="left" if name == "model" else "right")
        for d in config.distances:
            table.add_column(f"d={d}", justify="right")
        for model, _, _ in config.variants():
            runs = [r for r in report.results if (r.task, r.model) == (task, model)]
            if runs:
                cells = [_cell(report.summary(task, model, d)) for d in config.distances]
                table.add_row(model, str(runs[0].hidden_size), f"{runs[0].parameters:,}", *cells)
        console.print(table)
    _print_checks(report, console)
    if config.curriculum:
        _print_curriculum(report, console)
        console.print(
            "gradients and forget gates: measured on single-distance runs (run without --curriculum)"
        )
    elif "recall" not in config.tasks:
        console.print("gradients and forget gates: measured on the recall task, which was not run")
    else:
        _print_gradients(report, console)
        _print_forget_gates(report, console)


def _print_checks(report, console) -> None:
    budget, models = report.config.budget, len(report.results)
    doubled, improving = report.needed_the_doubling(), report.still_learning()
    if doubled:
        names = ", ".join(f"{r.task} {r.model} d={r.distance} seed {r.seed} ({r.steps:,})" for r in doubled)
        console.print(
            f"doubling check FAILED: {len(doubled)} of {models} models solved only between {budget:,} and "
            f"{2 * budget:,} steps: {names}. The budget was not enough for them: run again with "
            f"--budget {2 * budget}"
        )
    else:
        console.print(
            f"doubling check: going from {budget:,} to {2 * budget:,} steps solved no model that was not "
            f"solved by {budget:,} ({models} models)"
        )
    if improving:
        names = ", ".join(
            f"{r.task} {r.model} d={r.distance} seed {r.seed} ({r.accuracy_at_budget:.1%} -> {r.accuracy:.1%})"
            for r in improving
        )
        console.print(
            f"still learning: {len(improving)} unsolved models gained more than 10 points of accuracy between "
            f"{budget:,} and {2 * budget:,} steps, so a larger budget might solve them: {names}"
        )


def _print_curriculum(report, console) -> None:
    from rich.table import Table

    table = Table(
        title="curriculum: steps to solve each distance in turn (one model per seed; steps per stage, "
        "total in brackets; 0: it solved the distance before any training on it)",
        title_justify="left",
    )
    for name in ("task", "model", "seed", "distances solved"):
        table.add_column(name, justify="right" if name == "seed" else "left")
    for task in report.config.tasks:
        for model, _, _ in report.config.variants():
            for seed in range(report.config.seeds):
                total, stages = 0, []
                for r in (r for r in report.results if (r.task, r.model, r.seed) == (task, model, seed)):
                    if r.steps is not None:
                        total += r.steps
                        stages.append(f"{r.distance}: {r.steps:,} ({total:,})")
                    else:
                        stages.append(f"{r.distance}: not solved ({r.accuracy:.1%})")
                table.add_row(task, model, str(seed), ", ".join(stages))
    console.print(table)


def _print_gradients(report, console) -> None:
    from rich.table import Table

    measured = {model: g for model, g in report.gradients.items() if g["norms"]}
    untrained = [model for model, g in report.gradients.items() if not g["norms"]]
    if untrained:
        console.print(f"gradients not measured for {', '.join(untrained)}: it solved no recall distance")
    if not measured:
        return
    longest = max(report.config.distances)
    table = Table(
        title=f"mean ||dloss/dh(T-k)|| per sequence, on recall sequences of d={longest}, each model trained at "
        f"the longest distance it solved (k = {longest + 1}: the state just after reading the symbol)",
        title_justify="left",
    )
    table.add_column("k", justify="right")
    for model, g in measured.items():
        table.add_column(
            f"{model.replace('LSTM, forget bias', 'LSTM fb')} (d={g['trained_at']})", justify="right"
        )
    by_model = [dict(g["norms"]) for g in measured.values()]
    for k in sorted({k for norms in by_model for k in norms}):
        table.add_row(str(k), *(f"{norms[k]:.1e}" if k in norms else "" for norms in by_model))
    console.print(table)


def _print_forget_gates(report, console) -> None:
    gates = report.forget_gates
    if not gates:
        console.print("forget gates: no LSTM solved a recall distance")
        return
    held = gates["distance"]
    units = ", ".join(
        f"{u} (η² {e:.2f}, mean f {f:.3f}, ∏f {k:.0%})"
        for u, e, f, k in zip(gates["units"], gates["eta_squared"], gates["mean_forget"], gates["kept"])
    )
    everyone = gates["all_units_forget_by_step"][1:-1]
    console.print(
        f"forget gates of {gates['model']} trained at d={held}: the units whose cell state best separates the "
        f"remembered symbols (η² 1: a function of the symbol) are {units} over the {held} distractors; the "
        f"mean forget gate of all units is {sum(everyone) / max(1, len(everyone)):.3f}"
    )


def plot_long_range(report, path: str) -> bool:
    """A PNG: accuracy against distance per task (median, seed range), and with recall the gradient
    norms and the forget gates along a sequence; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from charlstm.analysis.memory_tasks import MemoryTask

    config = report.config
    gradients = {model: g for model, g in report.gradients.items() if g["norms"]}
    panels = len(config.tasks) + bool(gradients) + bool(report.forget_gates)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4), squeeze=False)
    axes = list(axes[0])
    for ax, task in zip(axes, config.tasks):
        for i, (model, _, _) in enumerate(config.variants()):
            distances = [d for d in config.distances if report.runs(task, model, d)]
            if not distances:
                continue
            accuracies = [[r.accuracy for r in report.runs(task, model, d)] for d in distances]
            middle = [statistics.median(a) for a in accuracies]
            spread = [
                [m - min(a) for m, a in zip(middle, accuracies)],
                [max(a) - m for m, a in zip(middle, accuracies)],
            ]
            ax.errorbar(distances, middle, yerr=spread, marker="o", capsize=3, label=model, color=f"C{i}")
        ax.axhline(1 / MemoryTask(task).num_symbols, color="grey", linestyle=":", label="chance")
        ax.set(
            xscale="log",
            xlabel="distance d",
            ylabel="held-out accuracy (median, seed range)",
            ylim=(0, 1.05),
            title=task,
        )
        ax.legend(fontsize="small")
    rest = axes[len(config.tasks) :]
    if gradients:
        ax = rest.pop(0)
        for i, (model, g) in enumerate(report.gradients.items()):
            if g["norms"]:
                ks, norms = zip(*g["norms"])
                shown = [n if n > 0 else math.nan for n in norms]
                ax.plot(
                    [max(k, 0.5) for k in ks],
                    shown,
                    marker="o",
                    label=f"{model} (d={g['trained_at']})",
                    color=f"C{i}",
                )
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="k (steps before the query)",
            ylabel="mean ||dloss / dh(T-k)||",
            title=f"gradients, recall d = {max(config.distances)}",
        )
        ax.legend(fontsize="small")
    if report.forget_gates:
        ax, gates = rest.pop(0), report.forget_gates
        for unit, trace in zip(gates["units"], gates["forget_by_step"]):
            ax.plot(trace, label=f"unit {unit} (η² {gates['eta_squared'][gates['units'].index(unit)]:.2f})")
        everyone = gates["all_units_forget_by_step"]
        ax.plot(everyone, color="grey", linestyle="--", label="mean of all units")
        low = min(min(min(t) for t in gates["forget_by_step"]), min(everyone))
        ax.set(
            xlabel="step (0: the symbol, last: the query)",
            ylabel="forget gate f (mean over sequences)",
            title=f"forget gates: {gates['model']}, d = {gates['distance']}",
            ylim=(max(0.0, low - 0.05), 1.005),
        )
        ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True
