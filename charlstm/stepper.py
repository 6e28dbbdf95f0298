"""The one-token stepper: a language model run one token at a time, fast, for generation,
compression and serving (``TokenStepper``), and a model that runs through it with lighter weights
(``SteppedModel``, ``with_weights``). The equations are the reference cells' (``cells``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from charlstm import lnlstm
from charlstm.cells import STACK_ORDER, Hidden, fused_weights, has_cell_state
from charlstm.config import WEIGHTS
from charlstm.errors import ConfigError
from charlstm.products import Product

# How a stepper may hold the weights of its recurrent products (``config.WEIGHTS``): fp32 as
# trained; int8, one scale per output row, multiplied by PyTorch's dynamic-quantization kernel
# (fbgemm: the activations are quantized per call, the product accumulates in int32); bf16,
# multiplied in bf16. The embedding table and the output projection stay fp32.
WEIGHT_FORMATS = WEIGHTS
# A first layer whose input products for the whole vocabulary take at most this many values reads
# them from a table instead of multiplying (a char model's table: vocabulary x 4H, ~0.5 MB).
INPUT_TABLE_LIMIT = 1 << 22
# From this many values of h a step (B x H) computes tanh(y) as 2 * sigmoid(2y) - 1: PyTorch's
# tanh costs about three sigmoids on this CPU, and past here the extra two ops are cheaper.
SIGMOID_TANH_MIN = 8192


def _g_doubled(t: torch.Tensor, hidden: int) -> torch.Tensor:
    """``t`` (4H, ...) in the order (i, f, o, g) with the g block times two: one sigmoid then
    gives all four gates, since tanh(z) = 2 * sigmoid(2z) - 1. Exact in every ``--weights``
    (int8 scales each row, so its integers stay the same)."""
    t = t.clone()
    t[3 * hidden :] *= 2
    return t


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
        if g.size(1) == 4 * H:  # the LSTM's, stored (i, f, o, g): views of g, i, f, o
            self.lstm_gates = (g[:, 3 * H :], g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H])

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

    (the LN-LSTM's as ``lnlstm.reference_step`` writes them).
    The first layer's input product depends only on the token, so it is read from a table of the
    whole vocabulary (small vocabularies); later layers multiply their input. The gates are stored
    in the order (i, f, o, g) with g's rows doubled, so one sigmoid covers all four (tanh(z) =
    2 * sigmoid(2z) - 1, and PyTorch's tanh costs about three sigmoids); everything else happens in
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
            if self.cell == "lstm":
                w_ih, w_hh, b_ih, b_hh = (_g_doubled(t, hidden) for t in (w_ih, w_hh, b_ih, b_hh))
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
        both biases summed, g_hh, (g_c, b_c), (g_c, b_c) doubled)); the first layer's table holds
        its input side. The gates' gains and biases have g's block doubled (``_g_doubled``)."""
        w = {k: v.detach() for k, v in rnn.layer_weights(layer).items()}
        w = {k: v[order] if v.size(0) == order.numel() else v for k, v in w.items()}
        w.update({k: _g_doubled(w[k], self.hidden_size) for k in ("gain_ih", "bias_ln_ih", "bias_ln_hh", "gain_hh")})
        cell_norm = (w["gain_c"], w["bias_c"])
        norms = (w["gain_ih"], w["bias_ln_ih"] + w["bias_ln_hh"], w["gain_hh"], cell_norm, tuple(2 * t for t in cell_norm))
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
                g, i, f, o = state.lstm_gates  # views of ``gates``
                gates.sigmoid_()  # g's rows were doubled: tanh(z) = 2 * sigmoid(2z) - 1
                if tape is None:
                    c.mul_(f).addcmul_(i, g, value=2).sub_(i)  # c_t = f * c_{t-1} + i * (2 * g - 1)
                else:
                    g.mul_(2).sub_(1)  # the tape keeps the activated gates
                    c.mul_(f).addcmul_(i, g)  # c_t = f * c_{t-1} + i * g
                self._output(h, c, o, self.layers[layer][3] if self.cell == "ln-lstm" else None)
                if tape is not None:
                    tape.append((gates.clone(), c.clone(), h.clone()))
            else:
                torch.tanh(gates, out=h)
            x = h
        logits = state.logits if out is None else out
        return self.head.add_to(logits, x, self.head_bias)  # (B, V)

    def _output(self, h, c, o, norms) -> None:
        """h_t = o * tanh(c_t), or the LN-LSTM's o * tanh(LN(c_t) * g_c + b_c) (``norms``: its
        LNs'), into ``h``; with many rows the tanh is 2 * sigmoid(2y) - 1."""
        by_sigmoid = h.numel() >= SIGMOID_TANH_MIN
        if norms is not None:
            gain, bias = norms[4] if by_sigmoid else norms[3]
            y = F.layer_norm(c, (self.hidden_size,), gain, bias, lnlstm.EPS)
        else:
            y = torch.mul(c, 2, out=h) if by_sigmoid else c
        if by_sigmoid:
            torch.sigmoid(y, out=h).mul_(2).sub_(1).mul_(o)
        else:
            torch.tanh(y, out=h).mul_(o)

    def _ln_gates(self, layer, ids, x, h, token, gates) -> torch.Tensor | None:
        """An ``LNLSTM`` layer's pre-activations into ``gates``: LN(x W_ih^T + b_ih) * g_ih (or the
        table's row) + LN(h W_hh^T) * g_hh + both LNs' biases. Returns ``x`` (the embedding)."""
        product, recurrent, bias, (g_x, b, g_r, _, _) = self.layers[layer]
        G = gates.size(1)
        rec = F.layer_norm(recurrent(h), (G,), g_r, None, lnlstm.EPS)
        if layer == 0 and self.table is not None:
            if token is None:
                torch.index_select(self.table, 0, ids, out=gates).add_(rec)
                return x
            inputs = self.table_rows[token]
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
