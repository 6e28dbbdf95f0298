"""The language model: embedding -> stacked LSTM (or GRU, or tanh RNN) -> dropout -> projection.

Training uses the fused ``nn.LSTM`` (oneDNN on CPU, cuDNN on GPU); each layer computes

    f, i, o = sigmoid(W [h_{t-1}, x_t] + b)     forget, input and output gates
    g       = tanh(W_g [h_{t-1}, x_t] + b_g)    candidate cell values
    c_t     = f * c_{t-1} + i * g               the additive cell path
    h_t     = o * tanh(c_t)

``--cell gru`` and ``--cell rnn`` swap in ``nn.GRU`` / ``nn.RNN`` (tanh) for comparison;
``charlstm.cells`` writes all three out step by step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from charlstm.config import ModelConfig
from charlstm.errors import ConfigError

# (h, c) for the LSTM, (h,) for the GRU and RNN; each (num_layers, B, hidden_size)
State = tuple[torch.Tensor, ...]
RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


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


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix hardware (AMX-bf16 or AVX-512-bf16)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in cpuinfo or "avx512_bf16" in cpuinfo


def resolve_precision(name: str, device: torch.device) -> tuple[torch.dtype | None, str]:
    """The autocast dtype for ``--precision`` on ``device`` (None: plain fp32), and why.

    ``auto`` takes bf16 where the hardware runs it fast (CUDA GPUs with bf16; CPUs with AMX or
    AVX-512-bf16), fp16 with gradient scaling on older GPUs, fp32 otherwise. Weights, optimizer
    state and the loss stay fp32 in every case.
    """
    if name == "fp32":
        return None, "fp32"
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if name == "auto":
            if bf16_ok:
                return torch.bfloat16, "bf16 autocast (auto: the GPU runs bf16)"
            return torch.float16, "fp16 autocast with gradient scaling (auto: the GPU has no bf16)"
        if name == "bf16" and not bf16_ok:
            raise ConfigError("--precision bf16: this GPU does not support bf16; use fp16, fp32 or auto")
        return (torch.bfloat16 if name == "bf16" else torch.float16), f"{name} autocast"
    if device.type == "cpu":
        fast = cpu_has_fast_bf16()
        if name == "auto":
            if fast:
                return torch.bfloat16, "bf16 autocast (auto: the CPU has AMX or AVX-512-bf16)"
            return None, "fp32 (auto: this CPU has no bf16 hardware, AMX or AVX-512-bf16)"
        if name == "fp16":
            raise ConfigError("--precision fp16 is for CUDA GPUs; on a CPU use bf16, fp32 or auto")
        if not fast:
            raise ConfigError(
                "--precision bf16: this CPU has no bf16 hardware (AMX or AVX-512-bf16), where "
                "PyTorch's LSTM cannot run in bf16; use --precision fp32 or auto"
            )
        return torch.bfloat16, "bf16 autocast"
    if name == "auto":
        return None, "fp32"
    raise ConfigError(f"--precision {name} is not supported on {device.type}; use fp32 or auto")


class LSTMLanguageModel(nn.Module):
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
        self._init_weights()

    def _init_weights(self) -> None:
        # nn.Embedding's N(0, 1) start trains fastest here (measured against N(0, 0.1), which
        # sat on the unigram plateau ~3x longer); a tied matrix is also the output projection,
        # so it starts at nn.Linear's scale instead.
        if self.config.tie_weights:
            bound = self.config.hidden_size**-0.5
            nn.init.uniform_(self.embedding.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)
        for name, param in self.rnn.named_parameters():
            if name.startswith("bias") and self.config.cell == "lstm":
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
        return tuple(weight.new_zeros(shape) for _ in range(2 if self.config.cell == "lstm" else 1))

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """``ids`` (T, B) token ids -> logits (T, B, vocab_size) and the state after the last step."""
        x = self.embedding(ids)  # (T, B, embedding_dim)
        lstm = self.config.cell == "lstm"
        if state is not None and not lstm:
            state = state[0]  # nn.GRU / nn.RNN take h alone
        out, state = self.rnn(x, state)  # (T, B, hidden_size)
        logits = self.head(self.dropout(out))  # (T, B, vocab_size)
        return logits, (state if lstm else (state,))


def detach_state(state: State) -> State:
    """Cut the graph at the window boundary: keep the values, stop gradients flowing further back."""
    return tuple(t.detach() for t in state)


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved before the cell type was a setting named the layer ``lstm``; it is ``rnn`` now."""
    return {("rnn." + k[5:] if k.startswith("lstm.") else k): v for k, v in state.items()}


class TokenStepper:
    """Runs the model one token at a time for generation, without the fused layer's per-call cost.

    The fused layer is fastest over long sequences; at one token per call its fixed cost dominates
    (on a 2-core CPU a 2 x 512 ``nn.LSTM`` manages a few hundred calls a second). This computes
    the same equations with one matrix product per layer, on weights laid out once. For the LSTM:

        gates = [x, h_{t-1}] @ [W_ih; W_hh]^T + (b_ih + b_hh)     (B, 4H), in the order i, f, g, o
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    (the GRU keeps its two products apart: its reset gate scales only the recurrent part of the
    candidate). Inference only (no dropout). Build it again if the weights change.
    """

    def __init__(self, model: LSTMLanguageModel):
        rnn = model.rnn
        self.cell = model.config.cell
        self.embedding = model.embedding.weight.detach()  # (V, E)
        self.layers = []
        for layer in range(model.config.num_layers):
            w_ih = getattr(rnn, f"weight_ih_l{layer}").detach()  # (G*H, in)
            w_hh = getattr(rnn, f"weight_hh_l{layer}").detach()  # (G*H, H)
            b_ih = getattr(rnn, f"bias_ih_l{layer}").detach()
            b_hh = getattr(rnn, f"bias_hh_l{layer}").detach()
            if self.cell == "gru":
                self.layers.append((w_ih.t().contiguous(), b_ih, w_hh.t().contiguous(), b_hh))
            else:
                weight = torch.cat([w_ih, w_hh], dim=1).t().contiguous()  # (in + H, G*H)
                self.layers.append((weight, b_ih + b_hh))
        self.head_weight = model.head.weight.detach().t().contiguous()  # (H, V)
        self.head_bias = model.head.bias.detach()

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """``ids`` (B,) -> logits (B, V) and the next state."""
        x = self.embedding[ids]  # (B, E)
        hs, cs = [], []
        for layer, weights in enumerate(self.layers):
            h = state[0][layer]  # (B, H)
            if self.cell == "lstm":
                weight, bias = weights
                gates = torch.addmm(bias, torch.cat([x, h], dim=1), weight)  # (B, 4H)
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * state[1][layer] + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
                x = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
                cs.append(c)
            elif self.cell == "gru":
                w_ih, b_ih, w_hh, b_hh = weights
                xr, xz, xn = torch.addmm(b_ih, x, w_ih).chunk(3, dim=1)  # (B, H) each
                hr, hz, hn = torch.addmm(b_hh, h, w_hh).chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                n = torch.tanh(xn + r * hn)
                x = (1 - z) * n + z * h
            else:
                weight, bias = weights
                x = torch.tanh(torch.addmm(bias, torch.cat([x, h], dim=1), weight))
            hs.append(x)
        logits = torch.addmm(self.head_bias, x, self.head_weight)  # (B, V)
        return logits, (torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),)
