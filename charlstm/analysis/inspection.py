"""Looking inside a trained model: gate statistics, interpretable units, next-token predictions.

``inspect_text`` runs the reference cells (``charlstm.cells``) over a text and gathers what
``charlstm inspect`` shows: every gate and state per step, units whose activation tracks simple
properties of the text (as in Karpathy, Johnson & Fei-Fei, "Visualizing and Understanding
Recurrent Networks", 2015), gate saturation per layer, and the model's top predictions. The
terminal and HTML pictures are drawn by ``charlstm.display``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from charlstm.cells import GATES, Trace, has_cell_state, trace
from charlstm.config import QUANTITIES, ModelConfig
from charlstm.errors import ConfigError, DataError

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
    """One unit's activation over the text: ``quantity`` of unit ``unit`` in ``layer`` (0-based;
    the label counts both from 1, as ``inspect --layer`` and ``--unit`` do)."""

    layer: int
    unit: int
    quantity: str
    values: np.ndarray  # (T,)
    feature: str | None = None  # the property it tracks, when found by search
    correlation: float | None = None

    @property
    def label(self) -> str:
        name = f"layer {self.layer + 1} {self.quantity} unit {self.unit + 1}"
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
    unknown_chars: list[str] = field(default_factory=list)  # read as the char vocabulary's unknown


def check_request(config: ModelConfig, quantity: str | None, layer: int | None, unit: int | None) -> None:
    """Refuse, all at once, a ``--show``, ``--layer`` or ``--unit`` (both 1-based) this model lacks."""
    problems = []
    if quantity is not None and quantity not in QUANTITIES[config.cell]:
        problems.append(f"--show {quantity}: a {config.cell} has {', '.join(QUANTITIES[config.cell])}")
    if layer is not None and not 1 <= layer <= config.num_layers:
        layers = "1 layer" if config.num_layers == 1 else f"{config.num_layers} layers"
        problems.append(f"--layer {layer}: the model has {layers}")
    if unit is not None and not 1 <= unit <= config.hidden_size:
        problems.append(f"--unit {unit}: layers have units 1-{config.hidden_size}")
    if problems:
        raise ConfigError("; ".join(problems))


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

    ``quantity`` (default: an LSTM's cell state, the hidden state for other cells) is what units
    are searched and shown by; ``layer`` and ``unit`` (0-based) pick one unit instead of a search.
    ``at`` is the token index after which the top predictions are shown (default: the last).
    """
    cell = model.config.cell
    check_request(model.config, quantity, None if layer is None else layer + 1, None if unit is None else unit + 1)
    quantity = quantity or ("cell" if has_cell_state(cell) else "hidden")
    model.eval()
    ids = torch.from_numpy(np.asarray(tokenizer.encode(text), dtype=np.int64))
    if len(ids) < 2:
        raise DataError("the text is too short to inspect: give at least 2 tokens")
    if at is not None and not 0 <= at < len(ids):
        raise ConfigError(f"--at {at}: the text has tokens 0-{len(ids) - 1}")
    unknown = tokenizer.unknown_chars(text) if tokenizer.kind == "char" else []
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
    return Inspection(cell, pieces, seen, stats, units, prediction, skipped, unknown)
