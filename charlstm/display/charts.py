"""Charts: loss curves in the terminal (unicode blocks) and as PNGs (matplotlib, optional)."""

from __future__ import annotations

from charlstm.atomic import atomic_write

BLOCKS = " ▁▂▃▄▅▆▇█"


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
