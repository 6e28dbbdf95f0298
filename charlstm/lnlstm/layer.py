"""``--cell ln-lstm``: the LSTM with layer normalisation inside the cell (Ba, Kiros and Hinton 2016,
"Layer Normalization", section 3.1), a stack of layers with ``nn.LSTM``'s interface. Each layer:

    z       = LN(W_ih x_t + b_ih) * g_ih + b_ln_ih + LN(W_hh h_{t-1}) * g_hh + b_ln_hh
    i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)      (z stacked as PyTorch's (i, f, g, o))
    c_t     = f * c_{t-1} + i * g
    h_t     = o * tanh(LN(c_t) * g_c + b_c)

LN normalises over the whole (4H,) pre-activation (or the (H,) cell): each row's mean and variance.
The two pre-activations are normalised apart, so neither swamps the other, and the cell's LN keeps
``tanh`` out of saturation whatever the cell has added up. It cost the fused kernel (it has no such
cell), so the recurrence runs in C++ (``kernel``), at 0.84 of the fused LSTM's tokens per second and
with -0.04 nats/char at 300 s on tinyshakespeare (benchmarks/RESULTS.md, "The layer-normalised LSTM
in C++"); where that cannot be built, ``reference_recurrence`` below runs the same equations.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charlstm.lnlstm import kernel

EPS = 1e-5  # LN's epsilon, the kernel's kEps (and ``recurrence``'s, written out)
# One layer's parameters (``{name}_l{layer}``): the two matrices and W_ih's bias as ``nn.LSTM``
# names them, then the gains and biases of the three LNs.
PARAMETERS = ("weight_ih", "weight_hh", "bias_ih", "gain_ih", "bias_ln_ih", "gain_hh", "bias_ln_hh", "gain_c", "bias_c")


def parameter_shapes(input_size: int, hidden_size: int, layer: int) -> dict[str, tuple[int, ...]]:
    """One layer's parameters and their shapes, by ``state_dict`` name."""
    g, h = 4 * hidden_size, hidden_size
    shapes = {"weight_ih": (g, input_size), "weight_hh": (g, h), "bias_ih": (g,)}
    shapes.update({name: (g,) for name in ("gain_ih", "bias_ln_ih", "gain_hh", "bias_ln_hh")})
    shapes.update({"gain_c": (h,), "bias_c": (h,)})
    return {f"{name}_l{layer}": shape for name, shape in shapes.items()}


def input_side(x, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """LN(W_ih x + b_ih) * g_ih with both LNs' biases added, for every row of ``x`` (..., I) at
    once: it does not depend on h (the stepper's table, the window's first half)."""
    w = weights
    G = w["weight_hh"].size(0)
    return F.layer_norm(F.linear(x, w["weight_ih"], w["bias_ih"]), (G,), w["gain_ih"], w["bias_ln_ih"] + w["bias_ln_hh"], EPS)


def reference_step(x, h, c, weights: dict[str, torch.Tensor]):
    """One step of one layer, the equations above line by line: ``x`` (B, I), ``h``, ``c`` (B, H);
    ``weights`` by the names in ``PARAMETERS``. Returns h_t, c_t and the gates (i, f, g, o)."""
    w = weights
    G = w["weight_hh"].size(0)
    z = input_side(x, w) + F.layer_norm(h @ w["weight_hh"].T, (G,), w["gain_hh"], None, EPS)
    zi, zf, zg, zo = z.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(zi), torch.sigmoid(zf), torch.tanh(zg), torch.sigmoid(zo)
    c = f * c + i * g
    h = o * torch.tanh(F.layer_norm(c, (G // 4,), w["gain_c"], w["bias_c"], EPS))
    return h, c, (i, f, g, o)


def recurrence(
    pre: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, g_hh: Tensor, g_c: Tensor, b_c: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """The steps of one window in Python: ``pre`` (T, B, 4H) the input side (``input_side``), h, c
    (B, H) -> out (T, B, H), h_T, c_T. Plain tensor operations and EPS written out, so TorchScript
    compiles it too (``export.onnx_ln`` writes its loop as ONNX's ``Loop``)."""
    G = w_hh.size(0)
    H = G // 4
    outputs: List[Tensor] = []
    for t in range(pre.size(0)):
        z = pre[t] + F.layer_norm(torch.matmul(h, w_hh.t()), [G], g_hh, None, 1e-5)
        c = torch.sigmoid(z[:, H : 2 * H]) * c + torch.sigmoid(z[:, :H]) * torch.tanh(z[:, 2 * H : 3 * H])
        h = torch.sigmoid(z[:, 3 * H :]) * torch.tanh(F.layer_norm(c, [H], g_c, b_c, 1e-5))
        outputs.append(h)
    return torch.stack(outputs), h, c


def reference_recurrence(x, h, c, weights: dict[str, torch.Tensor]):
    """One layer over a window in Python (autograd records it): ``x`` (T, B, I) -> out (T, B, H),
    h_T, c_T. The input side's product and LN for the whole window at once."""
    w = weights
    return recurrence(input_side(x, w), h, c, w["weight_hh"], w["gain_hh"], w["gain_c"], w["bias_c"])


class LNLSTM(nn.Module):
    """A stack of layer-normalised LSTM layers: ``(x (T, B, I), (h0, c0) or None) -> (out (T, B, H),
    (h_T, c_T))``, each state (num_layers, B, H), as ``nn.LSTM`` (``dropout`` between layers)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        for layer in range(num_layers):
            inputs = input_size if layer == 0 else hidden_size
            for name, shape in parameter_shapes(inputs, hidden_size, layer).items():
                self.register_parameter(name, nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self, forget_bias: float = 1.0) -> None:
        """``nn.LSTM``'s uniform start for the matrices and ``bias_ih``, the forget block of
        ``bias_ih`` at ``forget_bias`` (before the LN: it becomes the gate's offset from the
        others), the gains at 1 and the LN biases at 0."""
        bound = self.hidden_size**-0.5
        H = self.hidden_size
        for name, param in self.named_parameters():
            if name.startswith(("weight", "bias_ih")):
                nn.init.uniform_(param, -bound, bound)
                if name.startswith("bias_ih"):
                    param.data[H : 2 * H].fill_(forget_bias)
            elif name.startswith("gain"):
                nn.init.ones_(param)
            else:
                nn.init.zeros_(param)

    def layer_weights(self, layer: int) -> dict[str, torch.Tensor]:
        """One layer's parameters by the names in ``PARAMETERS``."""
        return {name: getattr(self, f"{name}_l{layer}") for name in PARAMETERS}

    def forward(self, x: torch.Tensor, hidden=None):
        T, B, _ = x.shape
        if hidden is None:
            zeros = x.new_zeros(self.num_layers, B, self.hidden_size)
            hidden = (zeros, zeros)
        hs, cs = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, training=True)
            w = self.layer_weights(layer)
            h0, c0 = hidden[0][layer], hidden[1][layer]
            if kernel.usable(x):
                u = F.linear(x, w["weight_ih"], w["bias_ih"])  # (T, B, 4H): bfloat16 under autocast
                x, h, c = kernel.CppLNRecurrence.apply(
                    u, w["weight_hh"], w["gain_ih"], w["gain_hh"], w["bias_ln_ih"] + w["bias_ln_hh"],
                    w["gain_c"], w["bias_c"], h0, c0,
                )
            else:
                x, h, c = reference_recurrence(x, h0, c0, w)
            hs.append(h)
            cs.append(c)
        return x, (torch.stack(hs), torch.stack(cs))
