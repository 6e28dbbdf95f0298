"""The LSTM language model: embedding -> stacked LSTM -> dropout -> projection to the vocabulary.

Training uses the fused ``nn.LSTM`` (oneDNN on CPU, cuDNN on GPU); each layer computes

    f, i, o = sigmoid(W [h_{t-1}, x_t] + b)     forget, input and output gates
    g       = tanh(W_g [h_{t-1}, x_t] + b_g)    candidate cell values
    c_t     = f * c_{t-1} + i * g               the additive cell path
    h_t     = o * tanh(c_t)
"""

from __future__ import annotations

import torch
from torch import nn

from charlstm.config import ModelConfig
from charlstm.errors import ConfigError

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden_size)


def select_device(name: str) -> torch.device:
    """The torch device for ``--device``: auto picks a CUDA GPU, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    return torch.device(name)


class LSTMLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,  # between layers
        )
        self.dropout = nn.Dropout(config.dropout)  # before the projection
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embedding.weight
        self._init_weights()

    def _init_weights(self) -> None:
        # nn.Embedding's N(0, 1) start trains fastest here (measured against N(0, 0.1), which
        # sat on the unigram plateau ~3x longer); a tied matrix is also the output projection,
        # so it starts at nn.Linear's scale instead.
        if self.config.tie_weights:
            bound = self.config.hidden_size**-0.5
            nn.init.uniform_(self.embedding.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)
        for name, param in self.lstm.named_parameters():
            if name.startswith("bias"):
                # A forget-gate bias of 1 (0.5 in each of the layer's two bias vectors) keeps the
                # cell path open early in training. PyTorch orders the gates (i, f, g, o).
                nn.init.zeros_(param)
                hidden = self.config.hidden_size
                param.data[hidden : 2 * hidden].fill_(0.5)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int) -> State:
        """A zero hidden state on the model's device and dtype."""
        weight = self.head.weight
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return (weight.new_zeros(shape), weight.new_zeros(shape))

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``ids`` (T, B) token ids -> logits (T, B, vocab_size) and the state after the last step."""
        x = self.embedding(ids)  # (T, B, embedding_dim)
        out, state = self.lstm(x, state)  # (T, B, hidden_size)
        logits = self.head(self.dropout(out))  # (T, B, vocab_size)
        return logits, state


def detach_state(state: State) -> State:
    """Cut the graph at the window boundary: keep the values, stop gradients flowing further back."""
    return (state[0].detach(), state[1].detach())
