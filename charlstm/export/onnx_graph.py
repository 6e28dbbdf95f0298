"""``charlstm export --format onnx``: one ONNX graph with the state explicit,

    ids (T, B) int64, h (L, B, H), c (L, B, H)  ->  logits (T, B, V), h_out, c_out

with ``T`` and ``B`` dynamic. Each recurrent layer becomes ONNX's own operator: ``LSTM`` for the
LSTM, ``GRU`` (``linear_before_reset=1``, PyTorch's formulation) for the GRU, and ``RNN`` with
its default ``Tanh`` activation for the tanh RNN, so any ONNX runtime runs the fused kernels; the
LN-LSTM, which has no operator, a ``Loop`` over time of its step's operators (``onnx_ln``). The
signature is the same for every cell: the GRU and the tanh RNN have no cell state, and pass ``c``
through unchanged (as ``charlstm.cells.step`` does).

The model config, the tokenizer record (the char vocabulary; a SentencePiece model as base64) and
the model card are in the graph's metadata (``metadata_props``, keys ``charlstm.*``, JSON values).

PyTorch's TorchScript-based exporter (``dynamo=False``) is used: it maps ``nn.LSTM`` / ``nn.GRU``
/ ``nn.RNN`` to those operators directly; the torch.export-based one unrolls them into loops.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path

from charlstm.atomic import atomic_write
from charlstm.errors import CharlstmError
from charlstm.export.source import ExportSource

OPSET = 17
INPUTS = ("ids", "h", "c")
OUTPUTS = ("logits", "h_out", "c_out")
# Each cell's recurrence in the graph: ONNX's own operators; the LN-LSTM, which has none, a Loop
# over time (``onnx_ln``).
ONNX_OPERATORS = {"lstm": "LSTM", "ln-lstm": "Loop", "gru": "GRU", "rnn": "RNN"}
MISSING = "ONNX export needs the onnx extra: pip install 'charlstm[onnx]' (onnx, onnxscript, onnxruntime)"


def require_onnx():
    try:
        import onnx
    except ImportError:
        raise CharlstmError(MISSING) from None
    return onnx


def _graph_module(model):
    """The model with the signature above (a wrapper: the model itself keeps its own)."""
    import torch

    if model.config.cell == "ln-lstm":
        from charlstm.export.onnx_ln import LNGraph

        return LNGraph(model).eval()

    class Graph(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids, h, c):
            lstm = self.model.config.cell == "lstm"  # the one cell with a state c here
            logits, hidden = self.model(ids, (h, c) if lstm else (h,))  # (T, B, V)
            return logits, hidden[0], hidden[1] if lstm else c

    return Graph(model).eval()


def metadata(source: ExportSource) -> dict[str, str]:
    """The graph's metadata: every value JSON."""
    record = source.tokenizer.to_dict()
    if "model_proto" in record:
        record["model_proto"] = base64.b64encode(bytes(record["model_proto"])).decode("ascii")
    return {
        "charlstm.format": json.dumps("charlstm-onnx"),
        "charlstm.model_config": json.dumps(source.config.to_dict()),
        "charlstm.tokenizer": json.dumps(record, ensure_ascii=False),
        "charlstm.card": json.dumps(source.card()),
        "charlstm.signature": json.dumps({"inputs": INPUTS, "outputs": OUTPUTS}),
    }


def onnx_bytes(source: ExportSource) -> bytes:
    """The ONNX model, serialized."""
    import torch

    onnx = require_onnx()
    config = source.config
    graph = _graph_module(source.model)
    ids = torch.zeros(2, 2, dtype=torch.long)  # (T, B): any sizes; both axes are dynamic
    h = torch.zeros(config.num_layers, 2, config.hidden_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter's deprecation notice, and its advice to pass the initial state as
        # inputs, which this graph does.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (ids, h, h.clone()),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes={
                "ids": {0: "T", 1: "B"},
                "h": {1: "B"},
                "c": {1: "B"},
                "logits": {0: "T", 1: "B"},
                "h_out": {1: "B"},
                "c_out": {1: "B"},
            },
        )
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata(source).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "charlstm"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def write_onnx(source: ExportSource, out: Path) -> list[Path]:
    return [atomic_write(out, onnx_bytes(source))]
