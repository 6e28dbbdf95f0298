"""One window's forward pass and loss gradients for an LSTM language model, by hand.

Dynamic evaluation (``adaptation``) and ``charlstm compress --adapt`` take one gradient step per
window of 64 tokens or so, a few streams wide. At that size autograd through the fused layer costs
more than the arithmetic: on the CPU its backward replays the window one small node at a time. Here
the forward keeps what the backward needs (the gates and cell values), the backward goes through
time with one product per step, and every weight's gradient is one product over the whole window:

    forward, each step:    a_t = x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T      (i, f, g, o)
                           c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)
    backward, each step:   dh_t = dh_t(from above) + da_{t+1} W_hh
                           dc_t = dc_{t+1} f_{t+1} + dh_t o (1 - tanh^2 c_t)
                           da_t = (dc_t g i(1-i), dc_t c_{t-1} f(1-f), dc_t i (1-g^2), dh_t tanh(c_t) o(1-o))
    then:                  dW_hh = sum_t da_t^T h_{t-1},  dW_ih = sum_t da_t^T x_t,  db = sum_t da_t

The loss is sum over rows of weight * cross-entropy (``weights`` (T, B): a mean is 1 / rows). The
same gradients as autograd's to float32 rounding (``tests/test_backprop.py``). ``forward`` runs a
window; ``from_steps`` takes what a ``TokenStepper`` computed while it stepped the window (the
compressor's way: no second pass). LSTMs only; other cells go through autograd (``supports``). No
dropout: this is for reading a text, not training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlstm.cells import fused_weights
from charlstm.products import Product


# A window of at least this many steps lays W_hh^T out for oneDNN for its way back (about 0.8 ms,
# then 39 us a step instead of 65 for one stream of a 1 x 512 LSTM); a shorter one multiplies as it is.
PACK_BACK_STEPS = 16


def supports(model) -> bool:
    """Whether ``forward`` and ``gradients`` can run ``model`` (an LSTM language model)."""
    return model.config.cell == "lstm"


@dataclass
class Tape:
    """What one window's forward pass kept: the inputs, each layer's states and gates, the output."""

    ids: torch.Tensor  # (T, B)
    layers: list  # per layer: (x (T, B, I), h (T+1, B, H) from h_{-1}, c (T+1, B, H), tanh c (T, B, H), gates (T, B, 4H))
    logits: torch.Tensor  # (T, B, V)

    @property
    def features(self) -> torch.Tensor:
        """(T, B, H): the last layer's outputs, which the projection reads (the cache's keys)."""
        return self.layers[-1][1][1:]

    @property
    def hidden(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The state after the window, (num_layers, B, H) each, as ``nn.LSTM`` returns it."""
        return (torch.stack([layer[1][-1] for layer in self.layers]), torch.stack([layer[2][-1] for layer in self.layers]))


@torch.no_grad()
def forward(model, ids: torch.Tensor, hidden=None) -> Tape:
    """``model`` over ``ids`` (T, B) from ``hidden`` (None: zeros), keeping what ``gradients`` needs."""
    T, B = ids.shape
    H = model.config.hidden_size
    x = model.embedding.weight[ids]  # (T, B, E)
    layers = []
    for layer in range(model.config.num_layers):
        w_ih, w_hh, b_ih, b_hh = fused_weights(model.rnn, layer)
        gates = torch.addmm(b_ih + b_hh, x.flatten(0, 1), w_ih.t()).view(T, B, 4 * H)  # the inputs' part, at once
        h = x.new_empty(T + 1, B, H)
        c = x.new_empty(T + 1, B, H)
        if hidden is None:
            h[0].zero_(), c[0].zero_()
        else:
            h[0].copy_(hidden[0][layer]), c[0].copy_(hidden[1][layer])
        tanh_c = x.new_empty(T, B, H)
        recurrent = Product(w_hh)  # laid out once for the window's T products
        for t in range(T):
            a = gates[t].add_(recurrent(h[t]))  # (B, 4H): i, f, g, o
            a[:, : 2 * H].sigmoid_(), a[:, 2 * H : 3 * H].tanh_(), a[:, 3 * H :].sigmoid_()
            torch.mul(a[:, H : 2 * H], c[t], out=c[t + 1]).addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
            torch.tanh(c[t + 1], out=tanh_c[t])
            torch.mul(a[:, 3 * H :], tanh_c[t], out=h[t + 1])
        layers.append((x, h, c, tanh_c, gates))
        x = h[1:]
    logits = torch.addmm(model.head.bias, x.flatten(0, 1), model.head.weight.t()).view(T, B, -1)
    return Tape(ids, layers, logits)


@torch.no_grad()
def from_steps(model, ids: torch.Tensor, hidden, steps: list, logits: list) -> Tape:
    """The ``Tape`` of a window already run by a ``TokenStepper`` (``step_(..., tape=steps)`` at
    each of its T steps, from ``hidden``, logits (B, V) each), so that ``gradients`` needs no
    second forward pass. The stepper's gates come in the order (i, f, o, g)."""
    T, L, H = len(logits), model.config.num_layers, model.config.hidden_size
    x = model.embedding.weight[ids]  # (T, B, E)
    layers = []
    for layer in range(L):
        gates, c, h = (torch.stack([steps[t * L + layer][k] for t in range(T)]) for k in range(3))  # (T, B, .)
        gates = torch.cat([gates[..., : 2 * H], gates[..., 3 * H :], gates[..., 2 * H : 3 * H]], dim=-1)  # (i, f, g, o)
        h = torch.cat([hidden[0][layer][None].expand(1, *h.shape[1:]), h])  # (T+1, B, H)
        c = torch.cat([hidden[1][layer][None].expand(1, *c.shape[1:]), c])
        layers.append((x, h, c, torch.tanh(c[1:]), gates))
        x = h[1:]
    return Tape(ids, layers, torch.stack(logits))


@torch.no_grad()
def gradients(model, tape: Tape, targets: torch.Tensor, weights: torch.Tensor, params) -> list[torch.Tensor]:
    """The gradient of sum(weights * cross-entropy(tape.logits, targets)) ((T, B) each) with
    respect to each of ``params`` (the model's parameters, in any order; a tied matrix gets both
    its uses)."""
    T, B, V = tape.logits.shape
    H = model.config.hidden_size
    grads: dict[int, torch.Tensor] = {}

    def add(param, grad) -> None:
        grads[id(param)] = grad if id(param) not in grads else grads[id(param)] + grad

    d_logits = torch.softmax(tape.logits.float().flatten(0, 1), dim=-1)  # (T*B, V)
    d_logits[torch.arange(T * B, device=d_logits.device), targets.flatten()] -= 1.0
    d_logits.mul_(weights.flatten()[:, None])
    top = tape.features.flatten(0, 1)  # (T*B, H)
    add(model.head.weight, d_logits.t() @ top)
    add(model.head.bias, d_logits.sum(dim=0))
    d_out = (d_logits @ model.head.weight).view(T, B, H)  # the loss's pull on each output
    for layer in reversed(range(model.config.num_layers)):
        x, h, c, tanh_c, gates = tape.layers[layer]
        w_ih, w_hh, b_ih, b_hh = (getattr(model.rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        i, f, g, o = gates[..., :H], gates[..., H : 2 * H], gates[..., 2 * H : 3 * H], gates[..., 3 * H :]
        # What does not depend on the gradient flowing back in time, for the whole window at once.
        through_c = o * (1 - tanh_c * tanh_c)  # (T, B, H): dh -> dc
        to_o = tanh_c * o * (1 - o)  # dh -> da_o
        to_ifg = torch.cat([g * i * (1 - i), c[:-1] * f * (1 - f), i * (1 - g * g)], dim=-1).view(T, B, 3, H)  # dc -> da
        d_gates = gates.new_empty(T, B, 4 * H)
        d_h = d_out.clone()  # (T, B, H): becomes dh_t with the part from t+1 added
        d_c = gates.new_zeros(B, H)
        back = Product(w_hh.detach().t()) if T >= PACK_BACK_STEPS else None  # da_{t+1} W_hh, laid out once
        for t in reversed(range(T)):
            if t < T - 1:
                if back is None:
                    d_h[t].addmm_(d_gates[t + 1], w_hh)
                else:
                    d_h[t].add_(back(d_gates[t + 1]))
                d_c.mul_(f[t + 1])
            d_c.addcmul_(d_h[t], through_c[t])
            torch.mul(d_c[:, None, :], to_ifg[t], out=d_gates[t, :, : 3 * H].view(B, 3, H))
            torch.mul(d_h[t], to_o[t], out=d_gates[t, :, 3 * H :])
        flat = d_gates.flatten(0, 1)  # (T*B, 4H)
        add(w_hh, flat.t() @ h[:-1].flatten(0, 1))
        add(w_ih, flat.t() @ x.flatten(0, 1))
        bias = flat.sum(dim=0)
        add(b_ih, bias)
        add(b_hh, bias)
        d_out = (flat @ w_ih).view(T, B, -1)  # the pull on this layer's inputs
    embedding = torch.zeros_like(model.embedding.weight)
    add(model.embedding.weight, embedding.index_add_(0, tape.ids.flatten(), d_out.flatten(0, 1)))
    return [grads[id(p)] if id(p) in grads else torch.zeros_like(p) for p in params]
