"""The recurrence written out: reference cells, the one-token stepper, and the fused layers'
weight layout.

The reference cells (one step of an LSTM, a GRU and a tanh RNN, written as their equations) take
the weights of a trained ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and reproduce the fused layer to
float tolerance (tested over long sequences). They are slow, a Python loop over time steps, and
exist to expose what the fused kernels hide: the gates and the cell. Training keeps the fused
layer. ``TokenStepper`` computes the same equations fast, one token at a time, for generation.

PyTorch stores a layer's gate weights stacked, ``weight_ih`` (G*H, I) and ``weight_hh`` (G*H, H),
in the order (i, f, g, o) for the LSTM and (r, z, n) for the GRU; ``W · [h_{t-1}, x_t]`` below is
``weight_hh · h_{t-1} + weight_ih · x_t`` with the two biases added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from charlstm import lnlstm
from charlstm.config import QUANTITIES, WEIGHTS
from charlstm.errors import ConfigError
from charlstm.products import Product

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


# How a stepper may hold the weights of its recurrent products (``config.WEIGHTS``): fp32 as
# trained; int8, one scale per output row, multiplied by PyTorch's dynamic-quantization kernel
# (fbgemm: the activations are quantized per call, the product accumulates in int32); bf16,
# multiplied in bf16. The embedding table and the output projection stay fp32.
WEIGHT_FORMATS = WEIGHTS
# A first layer whose input products for the whole vocabulary take at most this many values reads
# them from a table instead of multiplying (a char model's table: vocabulary x 4H, ~0.5 MB).
INPUT_TABLE_LIMIT = 1 << 22


@dataclass
class StepState:
    """A stepper's working memory for ``B`` rows: the hidden state, which ``TokenStepper.step_``
    updates in place, the last logits (overwritten by the next step) and scratch space."""

    hidden: Hidden  # (num_layers, B, H) each
    logits: torch.Tensor  # (B, V)
    gates: torch.Tensor  # (B, G*H)

    def __post_init__(self) -> None:
        # Views made once: taking a slice costs about as much as the arithmetic on it.
        H = self.hidden[0].size(2)
        g = self.gates
        self.layers = [
            tuple(t[layer] for t in self.hidden) for layer in range(self.hidden[0].size(0))
        ]  # per layer: h (B, H), and c for the LSTM
        if g.size(1) == 4 * H:  # the LSTM's (i, f, o, g)
            self.lstm_gates = (g[:, : 3 * H], g[:, 3 * H :], g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H])

    @property
    def batch_size(self) -> int:
        return self.hidden[0].size(1)


class TokenStepper:
    """Runs a language model one token at a time for generation, without the fused layer's
    per-call cost.

    The fused layer is fastest over long sequences; at one token per call its fixed cost dominates
    (on a 2-core CPU a 2 x 512 ``nn.LSTM`` manages a few hundred calls a second). This computes
    the same equations with one product per weight matrix, on weights laid out once. For the LSTM:

        gates = table[x_t] + h_{t-1} @ W_hh^T        (B, 4H); table = E @ W_ih^T + b_ih + b_hh
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    The first layer's input product depends only on the token, so it is read from a table of the
    whole vocabulary (small vocabularies); later layers multiply their input. The gates are stored
    in the order (i, f, o, g), so one sigmoid covers three of them; everything else happens in
    place in ``StepState``, so a step allocates nothing (the GRU, kept plain, does). The product
    with ``W_hh`` is the one that reads most memory: at batch 1 it sets the pace.

    ``weights`` (``WEIGHT_FORMATS``): fp32, or int8 / bf16 recurrent products. Two ways to call:
    ``stepper(ids, hidden)`` returns new tensors; ``state = stepper.state(hidden)`` then
    ``stepper.step_(ids, state)`` works in place, as ``generate`` does. Inference only (no
    dropout). Build it again if the weights change.
    """

    def __init__(self, model, weights: str = "fp32"):
        if weights not in WEIGHT_FORMATS:
            raise ConfigError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)} (got {weights!r})")
        self.cell = model.config.cell
        self.weights = weights
        self.hidden_size = hidden = model.config.hidden_size
        self.num_layers = model.config.num_layers
        self.embedding = model.embedding.weight.detach()  # (V, E)
        vocab = self.embedding.size(0)
        gated = len(STACK_ORDER[self.cell])
        # The LSTM's gates move from PyTorch's (i, f, g, o) to (i, f, o, g).
        order = torch.arange(gated * hidden)
        if has_cell_state(self.cell):
            order = torch.cat([order[: 2 * hidden], order[3 * hidden :], order[2 * hidden : 3 * hidden]])
        order = order.to(self.embedding.device)
        self.layers = []  # per layer: (input product, recurrent product, bias (G*H,), recurrent bias)
        self.table = None  # (V, G*H): the first layer's input product, bias included
        for layer in range(self.num_layers):
            if self.cell == "ln-lstm":
                self.layers.append(self._ln_layer(model.rnn, layer, order, weights))
                continue
            w_ih, w_hh, b_ih, b_hh = (t[order] for t in fused_weights(model.rnn, layer))
            # The GRU's reset gate scales only the recurrent part of its candidate: keep b_hh apart.
            bias, recurrent_bias = (b_ih, b_hh) if self.cell == "gru" else (b_ih + b_hh, None)
            product = None
            if layer == 0 and vocab * gated * hidden <= INPUT_TABLE_LIMIT:
                self.table = torch.addmm(bias, self.embedding, w_ih.t())  # (V, G*H)
                self.table_rows = self.table.unbind(0)  # (G*H,) each: views made once
            else:
                product = Product(w_ih, weights)
            self.layers.append((product, Product(w_hh, weights), bias, recurrent_bias))
        self.head = Product(model.head.weight)  # (V, H), fp32
        self.head_bias = model.head.bias.detach()

    def _ln_layer(self, rnn, layer: int, order: torch.Tensor, weights: str):
        """An ``LNLSTM`` layer: (input product, recurrent product, ``bias_ih``, the LNs' (g_ih,
        both biases summed, g_hh, g_c, b_c)); the first layer's table holds its input side."""
        w = {k: v.detach() for k, v in rnn.layer_weights(layer).items()}
        w = {k: v[order] if v.size(0) == order.numel() else v for k, v in w.items()}
        norms = (w["gain_ih"], w["bias_ln_ih"] + w["bias_ln_hh"], w["gain_hh"], w["gain_c"], w["bias_c"])
        product = None
        if layer == 0 and self.embedding.size(0) * order.numel() <= INPUT_TABLE_LIMIT:
            self.table = lnlstm.input_side(self.embedding, w)  # (V, 4H)
            self.table_rows = self.table.unbind(0)
        else:
            product = Product(w["weight_ih"], weights)
        return product, Product(w["weight_hh"], weights), w["bias_ih"], norms

    def state(self, hidden: Hidden | None, batch_size: int | None = None) -> StepState:
        """Working memory holding a copy of ``hidden`` (None: zeros for ``batch_size`` rows; a
        state of one row is repeated to ``batch_size`` rows)."""
        rows = batch_size or (hidden[0].size(1) if hidden is not None else 1)
        shape = (self.num_layers, rows, self.hidden_size)
        n = 2 if has_cell_state(self.cell) else 1
        new = tuple(self.embedding.new_zeros(shape) for _ in range(n))
        if hidden is not None:
            for mine, given in zip(new, hidden):
                mine.copy_(given.expand(-1, rows, -1))
        gates = self.embedding.new_empty(rows, self._gate_width())
        logits = self.embedding.new_empty(rows, self.head.out_features)
        return StepState(new, logits, gates)

    def _gate_width(self) -> int:
        return len(STACK_ORDER[self.cell]) * self.hidden_size

    def __call__(self, ids: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        """``ids`` (B,) -> logits (B, V) and the next hidden state, as new tensors."""
        state = self.state(hidden)
        return self.step_(ids, state), state.hidden

    def step_(
        self, ids: torch.Tensor, state: StepState, out: torch.Tensor | None = None, token: int | None = None,
        tape: list | None = None,
    ) -> torch.Tensor:
        """Read ``ids`` (B,): ``state.hidden`` moves on one token, in place; returns the logits
        (B, V), written to ``out`` when given, else to ``state.logits``. ``token``: at batch 1,
        ``ids``'s one id as a Python int, which saves the lookup an op. ``tape`` (an LSTM's): each
        layer's gates (i, f, o, g, activated), c_t and h_t are appended to it, copied."""
        gates = state.gates  # (B, G*H)
        x = None
        for layer, (product, recurrent, bias, recurrent_bias) in enumerate(self.layers):
            h = state.layers[layer][0]  # (B, H), a view: written in place below
            if self.cell == "gru":
                x = self._gru(layer, ids, x, h, product, recurrent, bias, recurrent_bias)
                continue
            if self.cell == "ln-lstm":
                x = self._ln_gates(layer, ids, x, h, token, gates)
            elif layer == 0 and self.table is not None:  # x_t's product and the bias, looked up
                if token is not None:
                    recurrent.add_to(gates, h, self.table_rows[token])  # the product that reads most
                else:
                    recurrent.add_to(gates, h, torch.index_select(self.table, 0, ids, out=gates))
            else:
                if x is None:
                    x = self.embedding.index_select(0, ids)  # (B, E)
                product.add_to(gates, x, bias)
                recurrent.add_to(gates, h)
            if has_cell_state(self.cell):
                c = state.layers[layer][1]  # (B, H)
                ifo, g, i, f, o = state.lstm_gates  # views of ``gates``
                ifo.sigmoid_()
                g.tanh_()
                c.mul_(f).addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
                if self.cell == "ln-lstm":  # h_t = o * tanh(LN(c_t) * g_c + b_c)
                    _, _, _, g_c, b_c = self.layers[layer][3]
                    torch.tanh(F.layer_norm(c, (self.hidden_size,), g_c, b_c, lnlstm.EPS), out=h).mul_(o)
                else:
                    torch.tanh(c, out=h).mul_(o)  # h_t = o * tanh(c_t)
                if tape is not None:
                    tape.append((gates.clone(), c.clone(), h.clone()))
            else:
                torch.tanh(gates, out=h)
            x = h
        logits = state.logits if out is None else out
        return self.head.add_to(logits, x, self.head_bias)  # (B, V)

    def _ln_gates(self, layer, ids, x, h, token, gates) -> torch.Tensor | None:
        """An ``LNLSTM`` layer's pre-activations into ``gates``: LN(x W_ih^T + b_ih) * g_ih (or the
        table's row) + LN(h W_hh^T) * g_hh + both LNs' biases. Returns ``x`` (the embedding)."""
        product, recurrent, bias, (g_x, b, g_r, _, _) = self.layers[layer]
        G = gates.size(1)
        rec = F.layer_norm(recurrent(h), (G,), g_r, None, lnlstm.EPS)
        if layer == 0 and self.table is not None:
            inputs = self.table_rows[token] if token is not None else self.table.index_select(0, ids)
        else:
            if x is None:
                x = self.embedding.index_select(0, ids)  # (B, E)
            inputs = F.layer_norm(product(x).add_(bias), (G,), g_x, b, lnlstm.EPS)
        torch.add(inputs, rec, out=gates)
        return x

    def _gru(self, layer, ids, x, h, product, recurrent, bias, recurrent_bias) -> torch.Tensor:
        """One GRU layer, out of place (r scales only the recurrent part of the candidate); the
        new state is copied into ``h``."""
        if layer == 0 and self.table is not None:
            xr, xz, xn = self.table.index_select(0, ids).chunk(3, dim=1)  # (B, H) each
        else:
            if x is None:
                x = self.embedding.index_select(0, ids)
            xr, xz, xn = product.add_to(x.new_empty(x.size(0), bias.size(0)), x, bias).chunk(3, dim=1)
        hr, hz, hn = recurrent.add_to(h.new_empty(h.size(0), recurrent_bias.size(0)), h, recurrent_bias).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return h.copy_((1 - z) * n + z * h)


class SteppedModel(nn.Module):
    """A language model that runs through a ``TokenStepper`` with lighter weights: the same
    ``forward(ids, hidden)`` and ``init_hidden`` as the model, so evaluation and scoring can
    measure what ``--weights`` costs. Inference only; one step per token, so slower than the
    fused layer over long texts."""

    def __init__(self, model, weights: str):
        super().__init__()
        self.config = model.config
        self.stepper = TokenStepper(model, weights)
        self.init_hidden = model.init_hidden

    def forward(self, ids: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """``ids`` (T, B) -> logits (T, B, V) and the state after the last step."""
        state = self.stepper.state(hidden, ids.size(1))
        out = state.logits.new_empty(ids.size(0), ids.size(1), state.logits.size(1))  # (T, B, V)
        for t, tokens in enumerate(ids):
            self.stepper.step_(tokens, state, out=out[t])
        return out, state.hidden


def with_weights(model, weights: str = "fp32"):
    """``model`` itself for fp32; for int8 or bf16 a ``SteppedModel`` whose recurrent products
    use weights of that kind (the embedding and the output projection stay fp32)."""
    if weights not in WEIGHT_FORMATS:
        raise ConfigError(f"--weights must be one of {', '.join(WEIGHT_FORMATS)} (got {weights!r})")
    return model if weights == "fp32" else SteppedModel(model, weights).eval()
