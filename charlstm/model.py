"""The language model: embedding -> stacked LSTM (or GRU, or tanh RNN) -> dropout -> projection.

Training uses the fused ``nn.LSTM`` (oneDNN on CPU, cuDNN on GPU); each layer computes

    f, i, o = sigmoid(W [h_{t-1}, x_t] + b)     forget, input and output gates
    g       = tanh(W_g [h_{t-1}, x_t] + b_g)    candidate cell values
    c_t     = f * c_{t-1} + i * g               the additive cell path
    h_t     = o * tanh(c_t)

``--cell ln-lstm`` normalises the pre-activations and the cell inside each layer
(``charlstm.lnlstm``: its recurrence in C++); ``--cell gru`` and ``--cell rnn`` swap in ``nn.GRU`` /
``nn.RNN`` (tanh) for comparison; ``charlstm.cells`` writes them all out step by step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.cells import Hidden, has_cell_state, init_forget_bias, recurrent_shapes
from charlstm.config import ModelConfig
from charlstm.lnlstm import LNLSTM

RNN_CLASSES = {"lstm": nn.LSTM, "ln-lstm": LNLSTM, "gru": nn.GRU, "rnn": nn.RNN}


def decays(name: str, param: torch.Tensor) -> bool:
    """Whether AdamW's weight decay applies to a parameter: the weight matrices, not the biases or
    the embedding."""
    return param.dim() >= 2 and not name.startswith("embedding")


def optimizer_order(model: nn.Module) -> list[str]:
    """The parameters' names in the optimizer's order (those that decay, then the rest): how a
    checkpoint's optimizer state numbers them."""
    named = list(model.named_parameters())
    return [n for n, p in named if decays(n, p)] + [n for n, p in named if not decays(n, p)]


class LanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,  # between layers
        )
        self.dropout = nn.Dropout(config.dropout)  # before the projection
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        # Per parameter name, AdamW's second moments when the checkpoint had them (``load_model``):
        # the mean squares of the training gradients, dynamic evaluation's prior (--adapt-prior).
        self.second_moments: dict[str, torch.Tensor] | None = None
        self._init_weights()

    def _init_weights(self) -> None:
        # nn.Embedding's N(0, 1) start trains fastest here (measured against N(0, 0.1), which
        # sat on the unigram plateau ~3x longer); a tied matrix is also the output projection,
        # so it starts at nn.Linear's scale instead.
        if self.config.tie_weights:
            bound = self.config.hidden_size**-0.5
            nn.init.uniform_(self.embedding.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)
        if self.config.cell == "lstm":
            init_forget_bias(self.rnn, 1.0)

    def num_parameters(self) -> int:
        """The parameters this model has (``count_parameters`` of its config, counted)."""
        return sum(p.numel() for p in self.parameters())

    def init_hidden(self, batch_size: int) -> Hidden:
        """A zero hidden state on the model's device and dtype."""
        weight = self.head.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(weight.new_zeros(shape) for _ in range(2 if has_cell_state(self.config.cell) else 1))

    def forward(self, ids: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """``ids`` (T, B) token ids -> logits (T, B, vocab_size) and the hidden state after the
        last step (None: start from zeros)."""
        logits, _, hidden = self.forward_features(ids, hidden)
        return logits, hidden

    def forward_features(
        self, ids: torch.Tensor, hidden: Hidden | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, Hidden]:
        """``forward``, also returning the last layer's output (T, B, hidden_size) that the
        projection reads: the neural cache (``evaluation.cache``) keys on it."""
        x = self.embedding(ids)  # (T, B, embedding_dim)
        lstm = has_cell_state(self.config.cell)
        if hidden is not None and not lstm:
            hidden = hidden[0]  # nn.GRU / nn.RNN take h alone
        if self.training and self.dropout.training and self.config.weight_drop > 0:  # dropout off: all of it
            out, hidden = self._weight_dropped(x, hidden)
        else:
            out, hidden = self.rnn(x, hidden)  # (T, B, hidden_size)
        logits = self.head(self.dropout(out))  # (T, B, vocab_size)
        return logits, out, (hidden if lstm else (hidden,))

    def _weight_dropped(self, x: torch.Tensor, hidden):
        """The recurrent layers with a fresh DropConnect mask on each hidden-to-hidden matrix
        (Wan et al. 2013; Merity et al. 2017): the same mask for every step of the window, and the
        fused kernel still runs the window (the masked matrices are passed in for this call)."""
        rate = self.config.weight_drop
        dropped = {
            name: F.dropout(weight, rate)  # scaled by 1 / (1 - rate), as dropout is
            for name, weight in self.rnn.named_parameters()
            if name.startswith("weight_hh")
        }
        return torch.func.functional_call(self.rnn, dropped, (x, hidden))


def weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of ``LanguageModel(config)``, by its ``state_dict`` name,
    computed without building it."""
    shapes = {"embedding.weight": (config.vocab_size, config.embedding_dim)}
    recurrent = recurrent_shapes(config.cell, config.embedding_dim, config.hidden_size, config.num_layers)
    shapes.update({f"rnn.{name}": shape for name, shape in recurrent.items()})
    shapes["head.weight"] = (config.vocab_size, config.hidden_size)
    shapes["head.bias"] = (config.vocab_size,)
    return shapes


def count_parameters(config: ModelConfig) -> int:
    """``LanguageModel(config).num_parameters()``, computed without building it (a tied
    projection shares the embedding's matrix)."""
    total = sum(math.prod(shape) for shape in weight_shapes(config).values())
    if config.tie_weights:
        total -= config.vocab_size * config.hidden_size
    return total


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph at the window boundary: keep the values, stop gradients flowing further back."""
    return tuple(t.detach() for t in hidden)
