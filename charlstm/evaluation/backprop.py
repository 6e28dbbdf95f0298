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

With a ``depth`` (``--adapt-depth``) each token's gradient goes at most that many steps back: the
backward runs in rounds instead, round k carrying the paths of exactly k steps back for every step
of the window at once (one product of T rows a round where the whole window took T of one row).

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


# W_hh^T is not laid out for oneDNN for the way back: for a 1 x 512 LSTM that took 4.1-4.7 ms a
# window (W_hh itself 0.3) to save about 0.8 over 63 one-row products.


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
    """``model`` over ``ids`` (T, B) from ``hidden`` (None: zeros), keeping what ``gradients`` needs:
    each layer's outputs from the fused layer (one call), then its gates for the whole window at
    once from them, and the cells by a scan (a 1 x 512 LSTM's 64 tokens of one stream: 5.9-6.2 ms,
    where stepping the gates by hand took 7.9)."""
    T, B = ids.shape
    H = model.config.hidden_size
    x = model.embedding.weight[ids]  # (T, B, E)
    layers = []
    for layer in range(model.config.num_layers):
        weights = fused_weights(model.rnn, layer)
        w_ih, w_hh, b_ih, b_hh = weights
        h = x.new_zeros(T + 1, B, H)
        c = x.new_zeros(T + 1, B, H)
        if hidden is not None:
            h[0].copy_(hidden[0][layer]), c[0].copy_(hidden[1][layer])
        h[1:] = torch.lstm(x, (h[:1], c[:1]), weights, True, 1, 0.0, False, False, False)[0]
        gates = torch.addmm(b_ih + b_hh, x.flatten(0, 1), w_ih.t())  # (T*B, 4H): i, f, g, o
        gates.addmm_(h[:-1].flatten(0, 1), w_hh.t())
        gates = gates.view(T, B, 4 * H)
        gates[..., : 2 * H].sigmoid_(), gates[..., 2 * H : 3 * H].tanh_(), gates[..., 3 * H :].sigmoid_()
        new = gates[..., :H] * gates[..., 2 * H : 3 * H]  # (T, B, H): i g
        for t in range(T):  # c_t = f c_{t-1} + i g
            torch.addcmul(new[t], gates[t, :, H : 2 * H], c[t], out=c[t + 1])
        layers.append((x, h, c, torch.tanh(c[1:]), gates))
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
def gradients(model, tape: Tape, targets: torch.Tensor, weights: torch.Tensor, params, depth: int | None = None) -> list[torch.Tensor]:
    """The gradient of sum(weights * cross-entropy(tape.logits, targets)) ((T, B) each) with
    respect to each of ``params`` (the model's parameters, in any order; a tied matrix gets both
    its uses). ``depth``: each token's gradient goes at most that many steps back in time (None,
    or T - 1 or more: through the whole window)."""
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
        local = _Local(
            through_c=o * (1 - tanh_c * tanh_c),  # (T, B, H): dh -> dc
            to_o=tanh_c * o * (1 - o),  # dh -> da_o
            to_ifg=torch.cat([g * i * (1 - i), c[:-1] * f * (1 - f), i * (1 - g * g)], dim=-1).view(T, B, 3, H),  # dc -> da
            f=f,
        )
        if depth is None or depth >= T - 1:
            d_gates = _through_time(local, d_out, w_hh.detach())
        else:
            d_gates = _truncated(local, d_out, w_hh.detach(), depth)
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


@dataclass
class _Local:
    """One layer's derivatives within a step, (T, B, .) each: dh -> dc, dh -> da_o, dc -> da_(i, f, g)
    (T, B, 3, H), and the forget gate (dc_t -> dc_{t-1})."""

    through_c: torch.Tensor
    to_o: torch.Tensor
    to_ifg: torch.Tensor
    f: torch.Tensor

    def gates(self, d_h: torch.Tensor, d_c: torch.Tensor, out: torch.Tensor, start: int = 0) -> torch.Tensor:
        """da (n, B, 4H) into ``out`` from dh and dc (n, B, H) of steps ``start`` .. ``start + n - 1``."""
        n, B, H = d_h.shape
        torch.mul(d_c[:, :, None, :], self.to_ifg[start : start + n], out=out[..., : 3 * H].view(n, B, 3, H))
        torch.mul(d_h, self.to_o[start : start + n], out=out[..., 3 * H :])
        return out


def _through_time(local: _Local, d_out: torch.Tensor, w_hh: torch.Tensor) -> torch.Tensor:
    """da (T, B, 4H) with the gradient carried back through the whole window, a step at a time."""
    T, B, H = d_out.shape
    d_gates = d_out.new_empty(T, B, 4 * H)
    d_h = d_out.clone()  # (T, B, H): becomes dh_t with the part from t+1 added
    d_c = d_out.new_zeros(B, H)
    for t in reversed(range(T)):
        if t < T - 1:
            d_h[t].addmm_(d_gates[t + 1], w_hh)  # da_{t+1} W_hh
            d_c.mul_(local.f[t + 1])
        d_c.addcmul_(d_h[t], local.through_c[t])
        local.gates(d_h[t : t + 1], d_c[None], d_gates[t : t + 1], t)
    return d_gates


def _truncated(local: _Local, d_out: torch.Tensor, w_hh: torch.Tensor, depth: int) -> torch.Tensor:
    """da (T, B, 4H) with each token's gradient carried back at most ``depth`` steps: the paths
    one step longer each round, every step of the window at once (one product of T rows a round,
    instead of T products of one row)."""
    T, B, H = d_out.shape
    d_h, d_c = d_out, d_out * local.through_c  # the paths of no step back
    d_gates = local.gates(d_h, d_c, d_out.new_empty(T, B, 4 * H))
    total = d_gates.clone()
    for k in range(1, depth + 1):  # the paths of k steps back end at steps 0 .. T-1-k
        n = T - k
        back_h = torch.mm(d_gates[1 : n + 1].flatten(0, 1), w_hh).view(n, B, H)  # da_{t+1} W_hh
        back_c = torch.mul(d_c[1 : n + 1], local.f[1 : n + 1]).addcmul_(back_h, local.through_c[:n])
        d_h, d_c = back_h, back_c
        d_gates = local.gates(d_h, d_c, d_out.new_empty(n, B, 4 * H))
        total[:n] += d_gates
    return total
