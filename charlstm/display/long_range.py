"""The long-range experiment on a terminal and in a PNG: a progress bar while models train, then
one table per task (solved seeds, steps to solve, accuracy), the doubling check, the gradient
norms and the forget gates of the LSTM that remembers."""

from __future__ import annotations

import math
import sys

from charlstm.atomic import atomic_write
from charlstm.display.consoles import stderr_console, stdout_console


class ExperimentProgress:
    """A bar on stderr, one tick per trained model, naming the last one that finished."""

    def __init__(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="model", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, results) -> None:
        last = results[-1]
        outcome = f"solved in {last.steps:,} steps" if last.steps else f"{last.accuracy:.0%}"
        self.bar.set_postfix_str(f"{last.task} {last.model} d={last.distance} seed {last.seed}: {outcome}")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _cell(summary: dict) -> str:
    """'3/3 · 250 (200–300)' when solved, else the final accuracy's median and range."""
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
        text += f" · acc {summary['median_accuracy']:.0%} ({low:.0%}–{high:.0%})"
    return text


def print_long_range(report) -> None:
    from rich.table import Table

    console, config = stdout_console(), report.config
    budget = config.budget
    for task in config.tasks:
        table = Table(
            title=f"{task}: seeds that solved it (held-out accuracy ≥ {config.solved_at:.0%} within "
            f"{2 * budget:,} steps) · median steps to solve (range) · final accuracy where not all did",
            title_justify="left",
        )
        for name in ("model", "hidden", "parameters"):
            table.add_column(name, justify="left" if name == "model" else "right")
        for d in config.distances(task):
            table.add_column(f"d={d}", justify="right")
        for label, _, _ in config.variants():
            runs = [r for r in report.results if (r.task, r.model) == (task, label) and not r.curriculum]
            if not runs:
                continue
            cells = [_cell(report.summary(task, label, d)) for d in config.distances(task)]
            table.add_row(label, str(runs[0].hidden_size), f"{runs[0].parameters:,}", *cells)
        if table.rows:
            console.print(table)
    if config.curriculum:
        _print_curriculum(report, console)
        return
    doubled = report.needed_the_doubling()
    models = len(report.results)
    if doubled:
        names = ", ".join(f"{r.task} {r.model} d={r.distance} seed {r.seed} ({r.steps:,})" for r in doubled)
        console.print(
            f"doubling check: {len(doubled)} of {models} models solved only between {budget:,} and "
            f"{2 * budget:,} steps: {names}; at {budget:,} steps their outcome would differ"
        )
    else:
        console.print(
            f"doubling check: doubling the budget from {budget:,} to {2 * budget:,} steps changed none of {models} outcomes"
        )
    _print_gradients(report, console)
    _print_forget_gates(report, console)


def _print_curriculum(report, console) -> None:
    from rich.table import Table

    table = Table(
        title="curriculum: steps to solve each distance in turn (one model per seed)", title_justify="left"
    )
    table.add_column("task")
    table.add_column("model")
    table.add_column("seed", justify="right")
    table.add_column("distances solved (steps)")
    for task in report.config.tasks:
        for label, _, _ in report.config.variants():
            for seed in report.config.seeds:
                runs = [r for r in report.results if (r.task, r.model, r.seed) == (task, label, seed)]
                stages = ", ".join(
                    f"{r.distance}: {r.steps:,}" if r.steps else f"{r.distance}: not ({r.accuracy:.0%})"
                    for r in runs
                )
                table.add_row(task, label, str(seed), stages)
    console.print(table)


def _print_gradients(report, console) -> None:
    from rich.table import Table

    measured = {label: g for label, g in report.gradients.items() if g["norms"]}
    if not measured:
        return
    longest = max(report.config.recall_distances)
    table = Table(
        title=f"mean ||dloss/dh(T-k)|| on recall sequences of d={longest}, each model trained at the longest "
        "distance it solved",
        title_justify="left",
    )
    table.add_column("k", justify="right")
    for label, g in measured.items():
        table.add_column(
            f"{label.replace('LSTM, forget bias', 'LSTM fb')} (d={g['trained_at']})", justify="right"
        )
    by_label = [dict(g["norms"]) for g in measured.values()]
    for k in sorted({k for norms in by_label for k in norms}):
        table.add_row(str(k), *(f"{norms[k]:.1e}" if k in norms else "" for norms in by_label))
    console.print(table)
    untrained = [label for label, g in report.gradients.items() if not g["norms"]]
    if untrained:
        console.print(f"not measured (solved no recall distance): {', '.join(untrained)}")


def _print_forget_gates(report, console) -> None:
    gates = report.forget_gates
    if not gates:
        return
    held = gates["distance"]
    units = ", ".join(
        f"{u} (η² {e:.2f}, mean f {f:.3f}, ∏f {k:.0%})"
        for u, e, f, k in zip(gates["units"], gates["eta_squared"], gates["mean_forget"], gates["kept"])
    )
    everyone = gates["all_units_forget_by_step"]
    console.print(
        f"forget gates of {gates['model']} trained at d={held}: the units whose cell state holds the symbol "
        f"are {units} over the {held} distractors; the mean forget gate of all units is "
        f"{sum(everyone[1:-1]) / max(1, len(everyone) - 2):.3f}"
    )


def plot_long_range(report, path: str) -> bool:
    """A PNG: accuracy against distance per task (median, seed range), the gradient norms, and the
    forget gates along a sequence; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    config = report.config
    panels = len(config.tasks) + 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4))
    for ax, task in zip(axes, config.tasks):
        for i, (label, _, _) in enumerate(config.variants()):
            distances = [d for d in config.distances(task) if report.runs(task, label, d)]
            if not distances:
                continue
            accuracies = [sorted(r.accuracy for r in report.runs(task, label, d)) for d in distances]
            middle = [a[len(a) // 2] for a in accuracies]
            spread = [
                [m - a[0] for m, a in zip(middle, accuracies)],
                [a[-1] - m for m, a in zip(middle, accuracies)],
            ]
            ax.errorbar(distances, middle, yerr=spread, marker="o", capsize=3, label=label, color=f"C{i}")
        ax.axhline(1 / 8, color="grey", linestyle=":", label="chance")
        ax.set(
            xscale="log",
            xlabel="distance d",
            ylabel="held-out accuracy (median, seed range)",
            ylim=(0, 1.05),
            title=task,
        )
        ax.legend(fontsize="small")
    gradients = axes[len(config.tasks)]
    for i, (label, g) in enumerate(report.gradients.items()):
        if g["norms"]:
            ks, norms = zip(*g["norms"])
            shown = [n if n > 0 else math.nan for n in norms]
            gradients.plot(
                [max(k, 0.5) for k in ks],
                shown,
                marker="o",
                label=f"{label} (d={g['trained_at']})",
                color=f"C{i}",
            )
    gradients.set(
        xscale="log",
        yscale="log",
        xlabel="k (steps before the query)",
        ylabel="mean ||dloss / dh(T-k)||",
        title=f"gradients, recall d = {max(config.recall_distances)}",
    )
    gradients.legend(fontsize="small")
    forget = axes[-1]
    gates = report.forget_gates
    if gates:
        for unit, trace in zip(gates["units"], gates["forget_by_step"]):
            forget.plot(trace, label=f"unit {unit} (holds the symbol)")
        forget.plot(
            gates["all_units_forget_by_step"], color="grey", linestyle="--", label="mean of all units"
        )
        forget.set(
            xlabel="step (0: the symbol, last: the query)",
            ylabel="forget gate f (mean over sequences)",
            title=f"{gates['model']}, d = {gates['distance']}",
            ylim=(0, 1.02),
        )
        forget.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


def print_start(config, jobs: int, workers: int, device: str) -> None:
    where = f"{workers} processes of one thread" if device == "cpu" and workers > 1 else device
    stderr_console().print(
        f"long-range: tasks {', '.join(config.tasks)}; {len(config.seeds)} seeds; "
        f"{'a curriculum per seed' if config.curriculum else 'one model per distance and seed'}; "
        f"budget {config.budget:,} steps, doubled to {2 * config.budget:,} for the check; "
        f"{jobs} models on {where}",
        markup=False,
    )
