"""``--cell ln-lstm`` in an ONNX graph: ONNX has no layer-normalised LSTM operator, so each layer's
recurrence is a TorchScript function whose loop over time the exporter writes as ONNX's ``Loop``
(the text's length stays dynamic); the input side's product and LN, over the whole window, and the
projection are ordinary operators. The same equations as ``charlstm.lnlstm.layer``."""

from __future__ import annotations

import functools
import warnings
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from charlstm.lnlstm import EPS


def recurrence(
    pre: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, g_hh: Tensor, g_c: Tensor, b_c: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """pre (T, B, 4H): the input side, normalised, both LNs' biases added; h, c (B, H)."""
    G = w_hh.size(0)
    H = G // 4
    outputs: List[Tensor] = []
    for t in range(pre.size(0)):
        z = pre[t] + F.layer_norm(torch.matmul(h, w_hh.t()), [G], g_hh, None, 1e-5)
        i = torch.sigmoid(z[:, :H])
        f = torch.sigmoid(z[:, H : 2 * H])
        g = torch.tanh(z[:, 2 * H : 3 * H])
        o = torch.sigmoid(z[:, 3 * H :])
        c = f * c + i * g
        h = o * torch.tanh(F.layer_norm(c, [H], g_c, b_c, 1e-5))
        outputs.append(h)
    return torch.stack(outputs), h, c


@functools.cache
def scripted():
    """``recurrence`` compiled by TorchScript, whose loop the exporter writes as ONNX's ``Loop``
    (TorchScript's deprecation notice is not the user's concern: the exporter still reads it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(recurrence)


class LNGraph(torch.nn.Module):
    """``ids (T, B), h, c (L, B, H) -> logits (T, B, V), h_out, c_out`` for an LN-LSTM model."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        assert EPS == 1e-5  # the loop above writes it out: TorchScript reads no module constants

    def forward(self, ids, h, c):
        model = self.model
        x = model.embedding(ids)  # (T, B, E)
        hs, cs = [], []
        for layer in range(model.config.num_layers):
            w = model.rnn.layer_weights(layer)
            G = w["weight_hh"].size(0)
            u = F.linear(x, w["weight_ih"], w["bias_ih"])  # (T, B, 4H)
            pre = F.layer_norm(u, (G,), w["gain_ih"], w["bias_ln_ih"] + w["bias_ln_hh"], EPS)
            x, h_l, c_l = scripted()(pre, h[layer], c[layer], w["weight_hh"], w["gain_hh"], w["gain_c"], w["bias_c"])
            hs.append(h_l)
            cs.append(c_l)
        return model.head(x), torch.stack(hs), torch.stack(cs)
