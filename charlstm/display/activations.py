"""What ``inspect`` shows: units coloured over the text, gate saturation and predictions, on a
terminal or as one self-contained HTML page."""

from __future__ import annotations

import html
import sys

import numpy as np

from charlstm.display.consoles import stdout_console, visible
from charlstm.analysis.inspection import OPEN, SHUT, GateStats, Inspection


def colour(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, red for positive, blue for negative, saturating at ``scale``."""
    x = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    fade = int(round(255 * (1 - abs(x))))
    return (255, fade, fade) if x >= 0 else (fade, fade, 255)


SPARKS = "▁▂▃▄▅▆▇█"  # most negative ... most positive; ▄▅ about zero


def sparkline(values, scale: float) -> str:
    """One mark per value, from ▁ (``-scale`` or less) through ▄▅ (zero) to █ (``scale`` or more):
    the picture without colour (NO_COLOR, a pipe, a file)."""
    marks = []
    for value in values:
        x = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
        marks.append(SPARKS[min(len(SPARKS) - 1, int((x + 1) / 2 * len(SPARKS)))])
    return "".join(marks)


def _plain_rows(pieces: list[str], values: list[float], scale: float, width: int) -> list[str]:
    """The text in rows of at most ``width`` characters (a newline shown as ↵, not broken), each
    followed by its sparkline: the mark under a character is its token's value."""
    chars, marks = [], []
    for piece, value in zip(pieces, values):
        shown = piece.replace("\t", "→").replace("\r", "␍").replace("\n", "↵") or "∅"
        chars += list(shown)
        marks += [sparkline([value], scale)] * len(shown)
    rows = []
    for start in range(0, len(chars), width):
        rows += ["".join(chars[start : start + width]), "".join(marks[start : start + width])]
    return rows


def layer_count(n: int) -> str:
    return "1 layer" if n == 1 else f"{n} layers"


def scale_of(values: np.ndarray) -> float:
    """The activation that gets full colour: 1 for gates and tanh outputs, the largest magnitude
    seen for an LSTM cell state (which is not bounded)."""
    peak = float(np.abs(values).max()) if len(values) else 1.0
    return 1.0 if peak <= 1.0 else peak


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


_GATE_COLUMNS = (
    "layer",
    "gate",
    f"open > {OPEN}",
    f"shut < {SHUT}",
    "units mostly open",
    "units mostly shut",
)


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
    # No colour (NO_COLOR, a pipe, a file): a sparkline under the text carries the values instead.
    coloured = console.color_system is not None and not console.no_color
    head = f"[bold]{config.cell.upper()}[/], {config.num_layers} x {config.hidden_size}, {len(report.pieces):,} tokens. "
    if coloured:
        console.print(head + "Background: the unit's value after each character (red positive, blue negative, white zero).")
    else:
        console.print(
            head + "Under each line of text, the unit's value after each character: "
            f"{SPARKS[0]} most negative, {SPARKS[3]}{SPARKS[4]} about zero, {SPARKS[-1]} most positive "
            "(--html PATH shows it in colour)."
        )
    for unit in report.units:
        scale = scale_of(unit.values)
        console.rule(unit.label)
        if not coloured:
            width = max(20, min(console.width, 100))
            for row in _plain_rows(report.pieces, unit.values.tolist(), scale, width):
                console.print(Text(row), no_wrap=True, overflow="ignore", crop=False)
            continue
        line = Text()
        for piece, value in zip(report.pieces, unit.values.tolist()):
            r, g, b = colour(value, scale)
            line.append(visible(piece), style=f"black on rgb({r},{g},{b})")
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
        f"<p>{e(report.cell.upper())}, {layer_count(len(report.trace.layers))}, {len(report.pieces):,} tokens. "
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


def inspection_png(report: Inspection, path: str, chars: int = 600, width: int = 100) -> bool:
    """The units coloured over the first ``chars`` characters of the text, one panel per unit
    (at least one), as a PNG; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from charlstm.atomic import atomic_write

    # one character per cell: a token's colour is spread over its characters
    text, per_char = [], []
    for index, piece in enumerate(report.pieces):
        for ch in piece or " ":
            text.append(ch)
            per_char.append(index)
        if len(text) >= chars:
            break
    text, per_char = text[:chars], np.asarray(per_char[:chars])
    lines, column = [[]], 0
    for ch, token in zip(text, per_char):
        lines[-1].append((ch, token))
        column += 1
        if ch == "\n" or column == width:
            lines.append([])
            column = 0
    rows = len(lines)
    fig, axes = plt.subplots(
        len(report.units), 1, figsize=(width * 0.1, (rows * 0.19 + 0.45) * len(report.units))
    )
    for ax, unit in zip(np.atleast_1d(axes), report.units):
        scale = scale_of(unit.values)
        image = np.ones((rows, width, 3))
        for y, line in enumerate(lines):
            for x, (ch, token) in enumerate(line):
                image[y, x] = np.asarray(colour(float(unit.values[token]), scale)) / 255
                if ch not in "\n ":
                    ax.text(x, y, ch, ha="center", va="center", fontsize=6.5, family="monospace")
        ax.imshow(image, aspect="auto", interpolation="nearest")
        ax.set_title(unit.label, fontsize=9, loc="left")
        ax.set_axis_off()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=130))
    plt.close(fig)
    return True
