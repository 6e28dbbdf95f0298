"""Looking inside a trained model: gate statistics, interpretable units, next-token predictions.

``inspect_text`` runs the reference cells (``charlstm.cells``) over a text and gathers what
``charlstm inspect`` shows: every gate and state per step, units whose activation tracks simple
properties of the text (as in Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding
Recurrent Networks", 2015), gate saturation per layer, and the model's top predictions. The
terminal rendering lives in ``cli.py``; ``to_html`` writes the same pictures as one page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import torch

from charlstm.cells import GATES, QUANTITIES, Trace, trace

OPEN, SHUT = 0.9, 0.1  # a gate value above OPEN lets (nearly) everything through; below SHUT, nothing


# ------------------------------------------------------------------------------ text features


def text_features(pieces: list[str]) -> dict[str, np.ndarray]:
    """Per-token properties of the text that a unit might track, each (T,) float.

    A token's value is taken after its last character (what the model has read by then).
    """
    quote = paren = column = 0
    prev = "\n"
    names = ("inside quotes", "inside brackets", "position in line", "start of a word", "end of line")
    values: dict[str, list[float]] = {name: [] for name in names}
    for piece in pieces:
        word_start = False
        for ch in piece or " ":
            if ch == '"':
                quote ^= 1
            elif ch in "([{":
                paren += 1
            elif ch in ")]}":
                paren = max(0, paren - 1)
            column = 0 if ch == "\n" else column + 1
            word_start = word_start or (ch.isalpha() and not prev.isalpha())
            prev = ch
        values["inside quotes"].append(quote)
        values["inside brackets"].append(min(paren, 1))
        values["position in line"].append(column)
        values["start of a word"].append(float(word_start))
        values["end of line"].append(float(piece.endswith("\n")))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def _correlations(feature: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``feature`` (T,) with every column of ``activations`` (T, H)."""
    f = feature - feature.mean()
    a = activations.astype(np.float64)
    a = a - a.mean(axis=0)
    denominator = np.sqrt((f**2).sum() * (a**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f @ a) / denominator
    return np.nan_to_num(r)


# ------------------------------------------------------------------------------ the report


@dataclass
class Unit:
    """One unit's activation over the text: ``quantity`` of unit ``unit`` in ``layer`` (0-based)."""

    layer: int
    unit: int
    quantity: str
    values: np.ndarray  # (T,)
    feature: str | None = None  # the property it tracks, when found by search
    correlation: float | None = None

    @property
    def label(self) -> str:
        name = f"layer {self.layer + 1} {self.quantity} unit {self.unit}"
        if self.feature:
            name += f": {self.feature} (r = {self.correlation:+.2f})"
        return name


@dataclass
class GateStats:
    layer: int
    gate: str
    open_fraction: float  # of all (step, unit) values above OPEN
    shut_fraction: float  # ... below SHUT
    units_mostly_open: int  # units above OPEN on more than half the steps
    units_mostly_shut: int
    units: int


@dataclass
class Prediction:
    position: int  # index of the token after which the model predicts
    context: str  # the text read up to and including that token (its last few dozen characters)
    actual: str | None  # the token that really comes next, if the text goes on
    top: list[tuple[str, float]]  # (token text, probability), most likely first


@dataclass
class Inspection:
    cell: str
    pieces: list[str]  # the text, one piece per token
    trace: Trace
    gate_stats: list[GateStats]
    units: list[Unit]  # the units to show: those asked for, or the best found per feature
    prediction: Prediction
    skipped_features: list[str] = field(default_factory=list)  # constant in this text


def inspect_text(
    model,
    tokenizer,
    text: str,
    quantity: str | None = None,
    layer: int | None = None,
    unit: int | None = None,
    at: int | None = None,
    top_k: int = 5,
) -> Inspection:
    """Run ``model`` over ``text`` and gather what ``charlstm inspect`` shows.

    ``quantity`` (default: the LSTM's cell state, the hidden state for other cells) is what units
    are searched and shown by; ``layer`` and ``unit`` (0-based) pick one unit instead of a search.
    ``at`` is the token index after which the top predictions are shown (default: the last).
    """
    cell = model.config.cell
    quantity = quantity or ("cell" if cell == "lstm" else "hidden")
    if quantity not in QUANTITIES[cell]:
        raise ValueError(f"{cell} has no {quantity!r}; choose from {', '.join(QUANTITIES[cell])}")
    model.eval()
    ids = torch.from_numpy(np.asarray(tokenizer.encode(text), dtype=np.int64))
    table = tokenizer.token_bytes()
    pieces = [table[i].decode("utf-8", "replace") for i in ids.tolist()]
    seen = trace(model, ids)
    layers = range(len(seen.layers)) if layer is None else [layer]

    units: list[Unit] = []
    skipped: list[str] = []
    if unit is not None:
        for li in layers:
            units.append(Unit(li, unit, quantity, seen.layers[li][quantity][:, unit].numpy()))
    else:
        stacked = np.concatenate([seen.layers[li][quantity].numpy() for li in layers], axis=1)  # (T, L*H)
        hidden = seen.layers[0][quantity].shape[1]
        for name, feature in text_features(pieces).items():
            if feature.std() == 0:
                skipped.append(name)
                continue
            r = _correlations(feature, stacked)
            best = int(np.abs(r).argmax())
            li, ui = layers[best // hidden], best % hidden
            units.append(Unit(li, ui, quantity, stacked[:, best], name, float(r[best])))

    stats = []
    for li, values in enumerate(seen.layers):
        for gate in GATES[cell]:
            g = values[gate].numpy()  # (T, H)
            stats.append(
                GateStats(
                    layer=li,
                    gate=gate,
                    open_fraction=float((g > OPEN).mean()),
                    shut_fraction=float((g < SHUT).mean()),
                    units_mostly_open=int(((g > OPEN).mean(axis=0) > 0.5).sum()),
                    units_mostly_shut=int(((g < SHUT).mean(axis=0) > 0.5).sum()),
                    units=g.shape[1],
                )
            )

    at = len(pieces) - 1 if at is None else at
    probs = torch.softmax(seen.logits[at], dim=-1)
    if getattr(tokenizer, "unk_id", None) is not None:
        probs[tokenizer.unk_id] = 0.0  # never a prediction anyone can use
    p, idx = probs.topk(min(top_k, probs.numel()))
    prediction = Prediction(
        position=at,
        context="".join(pieces[max(0, at - 60) : at + 1]),
        actual=pieces[at + 1] if at + 1 < len(pieces) else None,
        top=[(table[i].decode("utf-8", "replace"), float(q)) for i, q in zip(idx.tolist(), p.tolist())],
    )
    return Inspection(cell, pieces, seen, stats, units, prediction, skipped)


# ------------------------------------------------------------------------------ colours and HTML


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


def to_html(report: Inspection, title: str) -> str:
    """One self-contained page (inline CSS, no scripts, no network resources)."""
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
        parts.append(
            '<h2>Gate saturation</h2><table id="gates"><tr><th>layer</th><th>gate</th>'
            f"<th>open &gt; {OPEN}</th><th>shut &lt; {SHUT}</th><th>units mostly open</th>"
            "<th>units mostly shut</th></tr>"
        )
        for s in report.gate_stats:
            parts.append(
                f"<tr><td>{s.layer + 1}</td><td>{e(s.gate)}</td><td>{s.open_fraction:.1%}</td>"
                f"<td>{s.shut_fraction:.1%}</td><td>{s.units_mostly_open}/{s.units}</td>"
                f"<td>{s.units_mostly_shut}/{s.units}</td></tr>"
            )
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
