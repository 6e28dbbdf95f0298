"""``--cell ln-lstm`` in an ONNX graph: ONNX has no layer-normalised LSTM operator, so each layer's
recurrence is a TorchScript function whose loop over time the exporter writes as ONNX's ``Loop``
(the text's length stays dynamic); the input side's product and LN, over the whole window, and the
projection are ordinary operators. The same equations as ``charlstm.lnlstm.layer``."""

from __future__ import annotations

import functools
import warnings

import torch

from charlstm.lnlstm.layer import input_side, recurrence


@functools.cache
def scripted():
    """``lnlstm.layer.recurrence`` compiled by TorchScript, whose loop the exporter writes as
    ONNX's ``Loop`` (TorchScript's deprecation notice is not the user's concern: the exporter
    still reads it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(recurrence)


class LNGraph(torch.nn.Module):
    """``ids (T, B), h, c (L, B, H) -> logits (T, B, V), h_out, c_out`` for an LN-LSTM model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, h, c):
        model = self.model
        x = model.embedding(ids)  # (T, B, E)
        hs, cs = [], []
        for layer in range(model.config.num_layers):
            w = model.rnn.layer_weights(layer)
            pre = input_side(x, w)  # (T, B, 4H)
            x, h_l, c_l = scripted()(pre, h[layer], c[layer], w["weight_hh"], w["gain_hh"], w["gain_c"], w["bias_c"])
            hs.append(h_l)
            cs.append(c_l)
        return model.head(x), torch.stack(hs), torch.stack(cs)
