"""All rendering: progress bars, tables, coloured text, the inspect page and plots.

The library computes; this module shows. Only this module and ``cli`` know rich and tqdm (both
imported inside functions, so ``charlstm --help`` stays fast). Progress and tables for people go
to stderr; results (samples, ``eval``'s table, ``inspect``'s pictures) go to stdout.
"""

from __future__ import annotations

import html
import math
import sys
import time

import numpy as np

from charlstm.atomic import atomic_write
from charlstm.inspection import OPEN, SHUT, GateStats, Inspection


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def stdout_console():
    from rich.console import Console

    return Console(highlight=False)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# -------------------------------------------------------------------------------------- training


class TrainProgress:
    """``TrainingEvents`` for a terminal: a progress bar during training and a summary table at
    the end, all on stderr."""

    def __init__(self) -> None:
        self.console = stderr_console()
        self.bar = None
        self.val_loss = math.nan
        self.last_update = 0.0
        self.info: dict = {}

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:  # an error ends the bar's line before its message is printed
            self.bar.close()
            self.bar = None

    def on_start(self, info: dict) -> None:
        from tqdm import tqdm

        self.info = info
        self.console.print(
            f"run directory [bold]{info['run_dir']}[/]  device {info['device']}, {info['precision']}\n"
            f"tokenizer {info['tokenizer']} (vocabulary {info['vocab_size']:,})\n"
            f"model {info['num_parameters']:,} parameters  "
            f"tokens {info['train_tokens']:,} train / {info['val_tokens']:,} validation"
            + (
                f" (scored: the first {info['val_tokens_scored']:,})"
                if info["val_tokens_scored"] < info["val_tokens"]
                else ""
            )
            + f"  {info['steps_per_epoch']:,} steps per epoch"
        )
        if info.get("init_from"):
            start = info["init_from"]
            step = f" (step {start['step']:,})" if start.get("step") is not None else ""
            self.console.print(
                f"starting from {start['path']}{step}: its weights and tokenizer, a fresh optimizer", markup=False
            )
        if info.get("unknown_chars"):
            from charlstm.finetune import describe_unknown

            self.console.print(
                f"note: {describe_unknown(info['unknown_chars'])} of the text are not in the model's vocabulary: "
                f"they are trained as the unknown symbol ({info.get('unknown_tokens', 0):,} places). "
                "--strict-vocab refuses such a text; for a text in new scripts, train a new model with "
                "--tokenizer byte or --tokenizer bpe",
                markup=False,
            )
        if info.get("files"):
            skipped = f" ({info['skipped']} skipped)" if info.get("skipped") else ""
            self.console.print(f"corpus {info['files']} files{skipped}  validation: {info['validation']}")
        if info.get("world_size", 1) > 1:
            self.console.print(
                f"data parallel: {info['world_size']} processes ({info['backend']}) x batch "
                f"{info['global_batch'] // info['world_size']} = global batch {info['global_batch']} streams"
            )
        if info.get("replacements"):
            self.console.print(f"invalid UTF-8: {info['replacements']:,} byte sequences replaced by U+FFFD")
        if info.get("resumed_from_step") is not None:
            self.console.print(f"resuming from step {info['resumed_from_step']:,} ({info['token_cache']})")
        self.bar = tqdm(
            total=info["planned_steps"],
            initial=info.get("resumed_from_step") or 0,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_update < 0.5:
            return
        self.last_update = now
        eta = (self.info["planned_steps"] - step) * elapsed / step
        if self.info.get("max_time"):
            eta = min(eta, max(0.0, self.info["max_time"] - elapsed))
        val = f"{self.val_loss:.3f}" if math.isfinite(self.val_loss) else "-"  # none measured yet
        self.bar.set_postfix_str(
            f"loss {float(train_loss):.3f}, val {val}, {tokens_per_s:,.0f} tok/s, ETA {duration(eta)}",
            refresh=False,
        )

    def on_eval(self, record: dict) -> None:
        self.val_loss = record["val_loss"]

    @property
    def wants_samples(self) -> bool:
        """By default, samples are shown where someone is watching: stderr is a terminal."""
        return sys.stderr.isatty()

    def on_sample(self, step: int, val_loss: float, text: str) -> None:
        header = f"--- sample at step {step:,}, validation loss {val_loss:.4f}"
        if self.bar is not None:
            self.bar.write(f"{header}\n{text}", file=sys.stderr)  # above the bar, which stays
        else:
            print(f"{header}\n{text}", file=sys.stderr)

    def on_end(self, result) -> None:
        from rich.table import Table

        if self.bar is not None:
            self.bar.close()
            self.bar = None
        table = Table(title="charlstm train", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "steps", f"{result.steps:,} ({result.epochs_done:.2f} epochs, stopped by {result.stopped_by})"
        )
        table.add_row("time", duration(result.elapsed))
        table.add_row("tokens/s", f"{result.tokens_per_s:,.0f}")
        table.add_row("parameters", f"{result.num_parameters:,}")
        unit = "char" if self.info.get("tokenizer") == "char" else "token"
        if math.isfinite(result.best_val_loss):
            best = result.best_val_loss
            table.add_row(
                "best validation loss", f"{best:.4f} nats/{unit} = {best / math.log(2):.4f} bits/{unit}"
            )
            table.add_row("last validation loss", f"{result.last_val_loss:.4f} nats/{unit}")
            table.add_row("best checkpoint", str(result.best_path))
        else:
            table.add_row("validation loss", "not measured yet")
        table.add_row("last checkpoint", str(result.last_path))
        if result.metrics:
            table.add_row("metrics", str(result.run_dir / "metrics.jsonl"))
        self.console.print(table)


# ------------------------------------------------------------------------------------ evaluation


def print_eval_report(report, name: str) -> None:
    from rich.table import Table

    table = Table(title="charlstm eval", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("text", name)
    table.add_row("tokens", f"{report.tokens:,}")
    table.add_row("characters", f"{report.chars:,}")
    table.add_row("bytes", f"{report.bytes:,}")
    table.add_row("loss (nats/token)", f"{report.loss:.4f}")
    table.add_row("perplexity (per token)", f"{report.perplexity:.3f}")
    table.add_row("bits per character", f"{report.bits_per_char:.4f}")
    table.add_row("bits per byte", f"{report.bits_per_byte:.4f}")
    table.add_row("unknown characters", f"{report.unknown:,}")
    if report.replacements:
        table.add_row("invalid UTF-8 replaced", f"{report.replacements:,}")
    stdout_console().print(table)


def print_scores(results, as_json: bool) -> None:
    """``charlstm score``: one line per input line, in order (JSON lines with --json)."""
    import json

    if as_json:
        for r in results:
            sys.stdout.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        return
    sys.stdout.write(f"{'logprob':>10}  {'bits/char':>9}  text\n")
    for r in results:
        bits = "-" if r.tokens == 0 else f"{r.bits_per_char:9.4f}"
        sys.stdout.write(f"{r.logprob:10.3f}  {bits:>9}  {r.text}\n")


# ------------------------------------------------------------------------------------ inspection


def colour(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, red for positive, blue for negative, saturating at ``scale``."""
    x = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = int(round(255 * (1 - abs(x))))
    return (255, fade, fade) if x >= 0 else (fade, fade, 255)


def scale_of(values: np.ndarray) -> float:
    """The activation that gets full colour: 1 for gates and tanh outputs, the largest magnitude
    seen for an LSTM cell state (which is not bounded)."""
    peak = float(np.abs(values).max()) if len(values) else 1.0
    return 1.0 if peak <= 1.0 else peak


def visible(piece: str) -> str:
    """Show whitespace that would otherwise vanish: a newline as ↵ (then the line break)."""
    return piece.replace("\t", "→").replace("\r", "␍").replace("\n", "↵\n")


def describe_saturation(stats: list[GateStats]) -> str:
    """One sentence on the forget gates, the LSTM's memory: how many units keep their cell."""
    forget = [s for s in stats if s.gate == "forget"]
    if not forget:
        return ""
    kept = sum(s.units_mostly_open for s in forget)
    total = sum(s.units for s in forget)
    return (
        f"{kept} of {total} cells keep their forget gate above {OPEN} most of the time "
        f"(long memory); {sum(s.units_mostly_shut for s in forget)} reset below {SHUT} most of the time."
    )


_GATE_COLUMNS = ("layer", "gate", f"open > {OPEN}", f"shut < {SHUT}", "units mostly open", "units mostly shut")


def _gate_row(s: GateStats) -> tuple[str, ...]:
    return (
        str(s.layer + 1),
        s.gate,
        f"{s.open_fraction:.1%}",
        f"{s.shut_fraction:.1%}",
        f"{s.units_mostly_open}/{s.units}",
        f"{s.units_mostly_shut}/{s.units}",
    )


def print_inspection(report: Inspection, config) -> None:
    from rich.table import Table
    from rich.text import Text

    if report.unknown_chars:
        print(
            f"note: {len(report.unknown_chars)} characters not in the model's vocabulary are read as unknown",
            file=sys.stderr,
        )
    console = stdout_console()
    console.print(
        f"[bold]{config.cell.upper()}[/], {config.num_layers} x {config.hidden_size}, "
        f"{len(report.pieces):,} tokens. Background: the unit's value after each character "
        "(red positive, blue negative, white zero)."
    )
    for unit in report.units:
        scale = scale_of(unit.values)
        line = Text()
        for piece, value in zip(report.pieces, unit.values.tolist()):
            r, g, b = colour(value, scale)
            line.append(visible(piece), style=f"black on rgb({r},{g},{b})")
        console.rule(unit.label)
        console.print(line)
    if report.skipped_features:
        console.print(f"not searched (constant in this text): {', '.join(report.skipped_features)}")
    if report.gate_stats:
        table = Table(title="gate saturation", title_justify="left")
        for column in _GATE_COLUMNS:
            table.add_column(column, justify="right")
        for s in report.gate_stats:
            table.add_row(*_gate_row(s))
        console.print(table)
        if sentence := describe_saturation(report.gate_stats):
            console.print(sentence)
    p = report.prediction
    table = Table()
    table.add_column("token")
    table.add_column("probability", justify="right")
    for piece, prob in p.top:
        table.add_row(repr(piece), f"{prob:.3f}")
    console.print(f"top {len(p.top)} next tokens after token {p.position}:")
    console.print(Text("..." + visible(p.context[-60:])))
    console.print(table)
    if p.actual is not None:
        console.print(f"the text goes on with {p.actual!r}")


def inspection_html(report: Inspection, title: str) -> str:
    """The inspection as one self-contained page (inline CSS, no scripts, no network resources)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "pre.text{font-family:monospace;white-space:pre-wrap;line-height:1.5;border:1px solid #ccc;padding:.5em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
        "th{background:#eee}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{e(report.cell.upper())}, {len(report.trace.layers)} layers, {len(report.pieces):,} tokens. "
        "Each character's background is the unit's activation after reading it: "
        "red positive, blue negative, white zero.</p>",
    ]
    for unit in report.units:
        scale = scale_of(unit.values)
        parts.append(f'<h2 class="unit">{e(unit.label)}</h2>')
        spans = []
        for piece, value in zip(report.pieces, unit.values.tolist()):
            r, g, b = colour(value, scale)
            spans.append(
                f'<span style="background:rgb({r},{g},{b})" title="{value:+.3f}">{e(visible(piece))}</span>'
            )
        parts.append('<pre class="text">' + "".join(spans) + "</pre>")
    if report.skipped_features:
        parts.append(f"<p>Not searched (constant in this text): {e(', '.join(report.skipped_features))}.</p>")
    if report.gate_stats:
        header = "".join(f"<th>{e(c)}</th>" for c in _GATE_COLUMNS)
        parts.append(f'<h2>Gate saturation</h2><table id="gates"><tr>{header}</tr>')
        for s in report.gate_stats:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _gate_row(s)) + "</tr>")
        parts.append("</table>")
    p = report.prediction
    parts.append(
        f'<h2>Next-token predictions after token {p.position}</h2><pre class="text">{e(visible(p.context))}</pre>'
        '<table id="predictions"><tr><th>token</th><th>probability</th></tr>'
    )
    for piece, prob in p.top:
        parts.append(f"<tr><td>{e(repr(piece))}</td><td>{prob:.3f}</td></tr>")
    parts.append("</table>")
    if p.actual is not None:
        parts.append(f"<p>The text goes on with {e(repr(p.actual))}.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ experiment


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


# ------------------------------------------------------------------------------------ run records

BLOCKS = " ▁▂▃▄▅▆▇█"


def one_line(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = visible(text).replace("\n", "")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_runs(summaries) -> None:
    """``charlstm info``: one row per run on a wide terminal (one table per run on a narrow one),
    then the command line each was started with."""
    from rich.table import Table

    console = stdout_console()
    columns = ("run", "status", "model", "tokenizer", "data", "steps", "time", "best val", "bits/char", "last sample")
    numbers = ("steps", "time", "best val", "bits/char")
    rows = [_run_row(s) for s in summaries]
    if console.width >= 140:
        table = Table(title="charlstm info", title_justify="left")
        for column in columns:  # figures are never cut; words fold onto more lines when space is short
            if column in numbers:
                table.add_column(column, justify="right", no_wrap=True)
            else:
                table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for row in rows:
            table = Table(title=f"charlstm info {row[0]}", show_header=False, title_justify="left")
            table.add_column(style="bold", no_wrap=True)
            table.add_column(overflow="fold")
            for column, value in zip(columns[1:], row[1:]):
                table.add_row(column, value)
            console.print(table)
    for s in summaries:
        console.print(f"{s.name}: {s.command or '(command not recorded)'}", markup=False, soft_wrap=True)


def _run_row(s) -> tuple[str, ...]:
    params = f" ({s.num_parameters:,})" if s.num_parameters else ""
    data = (s.data or "-") + (f", from {s.init_from}" if s.init_from else "")
    return (
        s.name,
        s.status,
        (s.model or "-") + params,
        s.tokenizer or "-",
        data,
        f"{s.steps:,}" if s.steps is not None else "-",
        duration(s.time) if s.time is not None else "-",
        f"{s.best_val_loss:.4f}" if s.best_val_loss is not None else "-",
        f"{s.best_bits_per_char:.4f}" if s.best_bits_per_char is not None else "-",
        one_line(s.last_sample, 32),
    )


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
