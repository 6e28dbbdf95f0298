"""Charts: loss curves in the terminal (unicode blocks) and as PNGs (matplotlib, optional), and
the long-range experiment's tables and plot."""

from __future__ import annotations

import math

from charlstm.atomic import atomic_write
from charlstm.display.consoles import stdout_console

BLOCKS = " ▁▂▃▄▅▆▇█"


def print_long_range(report) -> None:
    from rich.table import Table

    console = stdout_console()
    config = report.config
    table = Table(title="recall accuracy by distance d (held-out sequences)", title_justify="left")
    table.add_column("model")
    table.add_column("hidden", justify="right")
    table.add_column("parameters", justify="right")
    for d in config.distances:
        table.add_column(f"d={d}", justify="right")
    for label, _, _ in config.variants():
        rows = [r for r in report.results if r.model == label]
        table.add_row(
            label,
            str(rows[0].hidden_size),
            f"{rows[0].parameters:,}",
            *(f"{report.accuracy(label, d):.0%}" for d in config.distances),
        )
    console.print(table)
    ks = sorted({k for norms in report.gradient_norms.values() for k, _ in norms})
    table = Table(
        title=f"mean ||dloss/dh(T-k)||: models trained at d={report.gradient_trained_at}, "
        f"sequences of d={report.gradient_distance}",
        title_justify="left",
    )
    table.add_column("k", justify="right")
    by_label = {label: dict(norms) for label, norms in report.gradient_norms.items()}
    for label in by_label:
        table.add_column(label.replace("LSTM, forget bias", "LSTM fb"), justify="right")
    for k in ks:
        table.add_row(str(k), *(f"{norms[k]:.1e}" if k in norms else "" for norms in by_label.values()))
    console.print(table)


def plot_long_range(report, path: str) -> bool:
    """Write a PNG of accuracy and gradient norm against distance; False when matplotlib is not
    installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label, _, _ in report.config.variants():
        distances = [r.distance for r in report.results if r.model == label]
        left.plot(distances, [report.accuracy(label, d) for d in distances], marker="o", label=label)
        ks, norms = zip(*report.gradient_norms.get(label, [(0, math.nan)]))
        right.plot([max(k, 0.5) for k in ks], norms, marker="o", label=label)
    left.axhline(1 / report.config.num_symbols, color="grey", linestyle=":", label="chance")
    left.set(xscale="log", xlabel="distance d (steps to remember across)", ylabel="accuracy", ylim=(0, 1.05))
    right.set(
        xscale="log",
        yscale="log",
        xlabel="k (steps before the query)",
        ylabel="mean ||dloss / dh(T-k)||",
        title=f"trained at d = {report.gradient_trained_at}, sequences of d = {report.gradient_distance}",
    )
    left.legend()
    right.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
    return True


def block_chart(
    values: list[float], width: int = 60, height: int = 6, low: float | None = None, high: float | None = None
) -> list[str]:
    """``values`` as columns of unicode blocks, ``height`` lines high and at most ``width``
    columns wide (values are averaged into columns); higher values are taller."""
    if not values:
        return []
    if len(values) > width:  # average neighbours into ``width`` columns
        edges = [round(i * len(values) / width) for i in range(width + 1)]
        values = [sum(values[a:b]) / (b - a) for a, b in zip(edges, edges[1:]) if b > a]
    low = min(values) if low is None else low
    high = max(values) if high is None else high
    span = (high - low) or 1.0
    levels = [max(1, round((v - low) / span * height * 8)) for v in values]  # eighths of a line
    lines = []
    for row in range(height - 1, -1, -1):
        line = ""
        for level in levels:
            filled = level - row * 8
            line += BLOCKS[max(0, min(8, filled))]
        lines.append(line)
    return lines


def print_curves(summaries, width: int = 60, height: int = 6) -> None:
    """``charlstm plot`` without ``--out``: each run's validation loss against steps, drawn with
    unicode blocks on one scale, on stdout."""
    runs = [s for s in summaries if s.metrics]
    losses = [m["val_loss"] for s in runs for m in s.metrics if m.get("val_loss") is not None]
    if not losses:
        print("no evaluations recorded yet")
        return
    low, high = min(losses), max(losses)
    for s in runs:
        values = [m["val_loss"] for m in s.metrics if m.get("val_loss") is not None]
        steps = [m["step"] for m in s.metrics]
        print(
            f"{s.name}: validation loss {values[0]:.3f} -> {values[-1]:.3f} (best {min(values):.3f}), "
            f"steps {steps[0]:,}-{steps[-1]:,}"
        )
        for i, line in enumerate(block_chart(values, width, height, low, high)):
            label = f"{high:7.3f} " if i == 0 else f"{low:7.3f} " if i == height - 1 else " " * 8
            print(label + "│" + line)
        print(" " * 8 + "└" + "─" * min(width, len(values)))


def plot_runs(summaries, path: str) -> None:
    """Training and validation loss against steps and against time, one colour per run, to a
    PNG. Raises ImportError when matplotlib is not installed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, s in enumerate(summaries):
        colour_ = f"C{i % 10}"
        for key, style, kind in (("val_loss", "-", "validation"), ("train_loss", "--", "train")):
            points = [(m["step"], m["time"], m[key]) for m in s.metrics if m.get(key) is not None]
            if not points:
                continue
            steps, times, values = zip(*points)
            marker = "o" if len(points) < 20 else None  # a run with few evaluations still shows
            look = {"color": colour_, "marker": marker, "markersize": 3, "label": f"{s.name} {kind}"}
            by_step.plot(steps, values, style, **look)
            by_time.plot([t / 60 for t in times], values, style, **look)
    by_step.set(xlabel="step", ylabel="loss (nats per token)", title="loss against steps")
    by_time.set(xlabel="minutes of training", ylabel="loss (nats per token)", title="loss against time")
    by_step.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
