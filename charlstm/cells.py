"""The recurrence written out: reference cells and the fused layers' weight layout.

The reference cells (one step of an LSTM, a GRU and a tanh RNN, written as their equations) take
the weights of a trained ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and reproduce the fused layer to
float tolerance (tested over long sequences). They are slow, a Python loop over time steps, and
exist to expose what the fused kernels hide: the gates and the cell. Training keeps the fused
layer. ``stepper.TokenStepper`` computes the same equations fast, one token at a time.

PyTorch stores a layer's gate weights stacked, ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, H),
in the order (i, f, g, o) for the LSTM and (r, z, n) for the GRU; ``W · [h_{t-1}, x_t]`` below is
``weight_hh · h_{t-1} + weight_ih · x_t`` with the two biases added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from charlstm import lnlstm
from charlstm.config import QUANTITIES

# What each cell exposes per layer (``config.QUANTITIES``); every entry is (T, H) in a ``Trace``.
GATES = {"lstm": ("forget", "input", "output"), "gru": ("update", "reset"), "rnn": ()}
GATES["ln-lstm"] = GATES["lstm"]
# How PyTorch stacks each cell's gate weights in ``weight_ih`` / ``weight_hh``.
STACK_ORDER = {
    "lstm": ("input", "forget", "candidate", "output"),
    "gru": ("reset", "update", "candidate"),
    "rnn": ("hidden",),
}
STACK_ORDER["ln-lstm"] = STACK_ORDER["lstm"]
# (h, c) for the LSTM, (h,) for the GRU and RNN; each (num_layers, B, hidden_size)
Hidden = tuple[torch.Tensor, ...]


def has_cell_state(cell: str) -> bool:
    """Whether the cell carries ``c`` beside ``h`` (the LSTMs)."""
    return cell in ("lstm", "ln-lstm")


def recurrent_shapes(cell: str, input_size: int, hidden_size: int, num_layers: int = 1) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of a fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (or an
    ``lnlstm.LNLSTM``), by its ``state_dict`` name, computed without building it: each matrix
    stacks one block of ``hidden_size`` rows per entry of ``STACK_ORDER[cell]``."""
    rows = len(STACK_ORDER[cell]) * hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(num_layers):
        inputs = input_size if layer == 0 else hidden_size
        if cell == "ln-lstm":
            shapes.update(lnlstm.parameter_shapes(inputs, hidden_size, layer))
            continue
        shapes[f"weight_ih_l{layer}"] = (rows, inputs)
        shapes[f"weight_hh_l{layer}"] = (rows, hidden_size)
        shapes[f"bias_ih_l{layer}"] = (rows,)
        shapes[f"bias_hh_l{layer}"] = (rows,)
    return shapes


def fused_weights(rnn: nn.RNNBase, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One layer's stacked weights, detached: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H) and
    their biases (G*H,), gates in ``STACK_ORDER``."""
    return tuple(getattr(rnn, f"{name}_l{layer}").detach() for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def init_forget_bias(rnn: nn.LSTM, forget_bias: float) -> None:
    """Zero an LSTM's biases but the forget gate's, which starts at ``forget_bias`` (split over the
    layer's two bias vectors): a positive bias keeps the cell path open early in training."""
    hidden = rnn.hidden_size
    forget = STACK_ORDER["lstm"].index("forget")
    for name, param in rnn.named_parameters():
        if name.startswith("bias"):
            nn.init.zeros_(param)
            param.data[forget * hidden : (forget + 1) * hidden].fill_(forget_bias / 2)


@dataclass
class Gate:
    """One gate's weights. ``W`` (H, H + I) and ``b`` act on ``[h_{t-1}, x_t]``; the parts that
    act on h and on x are kept too, for the GRU's candidate, which needs them apart."""

    W_h: torch.Tensor  # (H, H)
    W_x: torch.Tensor  # (H, I)
    b_h: torch.Tensor  # (H,)
    b_x: torch.Tensor  # (H,)

    def __post_init__(self) -> None:
        self.W = torch.cat([self.W_h, self.W_x], dim=1)  # (H, H + I)
        self.b = self.b_h + self.b_x

    def __call__(self, hx: torch.Tensor) -> torch.Tensor:
        return hx @ self.W.T + self.b  # W · [h_{t-1}, x_t] + b   (B, H)


def layer_gates(rnn: nn.RNNBase, layer: int, names: tuple[str, ...]) -> dict[str, Gate]:
    """Split a fused layer's stacked weights into one ``Gate`` per name (PyTorch's order)."""
    w_ih, w_hh, b_ih, b_hh = fused_weights(rnn, layer)  # (G*H, I), (G*H, H), (G*H,), (G*H,)
    h = rnn.hidden_size
    return {
        name: Gate(
            w_hh[k * h : (k + 1) * h],
            w_ih[k * h : (k + 1) * h],
            b_hh[k * h : (k + 1) * h],
            b_ih[k * h : (k + 1) * h],
        )
        for k, name in enumerate(names)
    }


def lstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, g: dict[str, Gate]):
    """One LSTM step, line by line the equations of the lecture notes:

        f, i, o = σ(W · [h_{t-1}, x_t] + b)
        g       = tanh(W_g · [h_{t-1}, x_t] + b_g)
        c_t     = f ⊙ c_{t-1} + i ⊙ g
        h_t     = o ⊙ tanh(c_t)

    Returns ``h_t, c_t`` and the gates, each (B, H).
    """
    hx = torch.cat([h, x], dim=1)  # [h_{t-1}, x_t]  (B, H + I)
    f = torch.sigmoid(g["forget"](hx))  # how much of the old cell to keep
    i = torch.sigmoid(g["input"](hx))  # how much of the candidate to write
    o = torch.sigmoid(g["output"](hx))  # how much of the cell to show
    candidate = torch.tanh(g["candidate"](hx))
    c = f * c + i * candidate  # the additive cell path: gradients flow through f, not a squashing
    h = o * torch.tanh(c)
    return h, c, {"forget": f, "input": i, "output": o, "candidate": candidate}


def gru_step(x: torch.Tensor, h: torch.Tensor, g: dict[str, Gate]):
    """One GRU step (PyTorch's formulation):

    r   = σ(W_r · [h_{t-1}, x_t] + b_r)                      reset gate
    z   = σ(W_z · [h_{t-1}, x_t] + b_z)                      update gate
    n   = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn))  candidate
    h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}
    """
    hx = torch.cat([h, x], dim=1)  # (B, H + I)
    r = torch.sigmoid(g["reset"](hx))
    z = torch.sigmoid(g["update"](hx))
    gn = g["candidate"]
    n = torch.tanh(x @ gn.W_x.T + gn.b_x + r * (h @ gn.W_h.T + gn.b_h))
    h = (1 - z) * n + z * h
    return h, {"reset": r, "update": z, "candidate": n}


def rnn_step(x: torch.Tensor, h: torch.Tensor, g: dict[str, Gate]):
    """One tanh-RNN step: h_t = tanh(W · [h_{t-1}, x_t] + b). Every step multiplies the gradient
    by W and tanh' ≤ 1, which is why it vanishes over long distances."""
    h = torch.tanh(g["hidden"](torch.cat([h, x], dim=1)))
    return h, {}


def cell_gates(rnn: nn.RNNBase, cell: str) -> list[dict]:
    """Every layer's gates of a fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN``; an ``LNLSTM``'s
    layers' parameters (by ``lnlstm.PARAMETERS``), detached: its LNs span all four gates."""
    if cell == "ln-lstm":
        return [{k: v.detach() for k, v in rnn.layer_weights(layer).items()} for layer in range(rnn.num_layers)]
    return [layer_gates(rnn, layer, STACK_ORDER[cell]) for layer in range(rnn.num_layers)]


def step(cell: str, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, gates: dict[str, Gate]):
    """One step of any cell: ``h_t, c_t`` (``c`` passes through unchanged for GRU and RNN) and
    everything ``QUANTITIES[cell]`` names, each (B, H)."""
    if cell == "lstm":
        h, c, seen = lstm_step(x, h, c, gates)
        seen["cell"] = c
    elif cell == "ln-lstm":
        h, c, (i, f, g, o) = lnlstm.reference_step(x, h, c, gates)
        seen = {"forget": f, "input": i, "output": o, "candidate": g, "cell": c}
    elif cell == "gru":
        h, seen = gru_step(x, h, gates)
    else:
        h, seen = rnn_step(x, h, gates)
    seen["hidden"] = h
    return h, c, seen


@dataclass
class Trace:
    """What a model computed at every step of one text: logits (T, V) and, per layer, every
    quantity in ``QUANTITIES[cell]`` as (T, H)."""

    cell: str
    logits: torch.Tensor
    layers: list[dict[str, torch.Tensor]]


@torch.no_grad()
def trace(model, ids: torch.Tensor) -> Trace:
    """Run ``model`` (a charlstm language model, any cell) over ``ids`` (T,) one step at a time
    with the reference cells, recording every gate and state. Batch 1, no dropout."""
    cell, rnn = model.config.cell, model.rnn
    gates = cell_gates(rnn, cell)
    x_all = model.embedding(ids.view(-1, 1))[:, 0]  # (T, E)
    hidden = rnn.hidden_size
    h = [x_all.new_zeros(1, hidden) for _ in gates]
    c = [x_all.new_zeros(1, hidden) for _ in gates]
    records = [{name: [] for name in QUANTITIES[cell]} for _ in gates]
    outputs = []
    for x in x_all:
        x = x.view(1, -1)  # (1, E)
        for layer, g in enumerate(gates):
            h[layer], c[layer], seen = step(cell, x, h[layer], c[layer], g)
            for name in QUANTITIES[cell]:
                records[layer][name].append(seen[name][0])
            x = h[layer]
        outputs.append(x[0])
    logits = model.head(torch.stack(outputs))  # (T, V)
    layers = [{name: torch.stack(values) for name, values in record.items()} for record in records]
    return Trace(cell, logits, layers)
