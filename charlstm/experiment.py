"""The long-range experiment: how far back can an LSTM, a GRU and a tanh RNN remember?

The task: a sequence starts with one of ``num_symbols`` symbols, then ``d`` random distractor
symbols, then a query marker; at the query the model must name the first symbol. Nothing in
between helps, so the answer has to be carried across all ``d`` steps. For every distance and
cell, a fresh one-layer model is trained for the same number of steps on fresh random batches,
with hidden sizes chosen so the three cells have (nearly) the same number of parameters, then
scored on held-out sequences (chance: 1 / ``num_symbols``).

The vanishing gradient is measured directly on the models trained at d = 100, over sequences of
the longest distance: the norm of the loss's gradient with respect to the hidden state k steps
before the query,
||∂loss/∂h_{T-k}||, computed with the reference cells (``charlstm.cells``) so every h_t is a leaf
of the graph.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.cells import STACK_ORDER, cell_gates, init_forget_bias, step
from charlstm.model import RNN_CLASSES


@dataclass
class ExperimentConfig:
    distances: tuple[int, ...] = (10, 30, 100, 300, 1000)
    steps: int = 500  # optimizer steps per (cell, distance), the same for every cell
    batch_size: int = 32
    num_symbols: int = 8  # what must be remembered
    num_distractors: int = 8  # the noise in between
    embedding_dim: int = 16
    lstm_hidden: int = 64  # the LSTM's size; the GRU and RNN get the same parameter budget
    lr: float = 3e-3
    clip: float = 1.0
    eval_sequences: int = 512
    seed: int = 0
    # Gradients are measured on the models trained at this distance (the largest one run that is
    # not above it), over sequences of the longest distance: models that have learnt to remember
    # something, looked at over the whole range.
    gradient_from: int = 100
    # The LSTM runs twice: with charlstm's forget-gate bias of 1 (the usual choice) and with a
    # larger one, which starts the cell path open (f = 0.95 instead of 0.73 per step).
    lstm_forget_biases: tuple[float, ...] = (1.0, 3.0)

    def variants(self) -> list[tuple[str, str, float | None]]:
        """(label, cell, forget-gate bias) of every model compared."""
        lstms = [
            ("LSTM" if b == 1.0 else f"LSTM, forget bias {b:g}", "lstm", b) for b in self.lstm_forget_biases
        ]
        return [*lstms, ("GRU", "gru", None), ("RNN", "rnn", None)]

    @classmethod
    def quick(cls) -> ExperimentConfig:
        """A run of seconds, for tests: two short distances, few steps, small models."""
        return cls(distances=(10, 30), steps=60, batch_size=16, lstm_hidden=16, eval_sequences=128)


class Recaller(nn.Module):
    """Embedding -> one recurrent layer -> a classifier over the symbols, read at the last step."""

    def __init__(
        self,
        cell: str,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_symbols: int,
        forget_bias: float | None = 1.0,
    ):
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = RNN_CLASSES[cell](embedding_dim, hidden_size)
        self.head = nn.Linear(hidden_size, num_symbols)
        if cell == "lstm":
            init_forget_bias(self.rnn, forget_bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(ids))  # (T, B, H)
        return self.head(out[-1])  # (B, num_symbols)


def hidden_for_budget(cell: str, budget: int, config: ExperimentConfig) -> int:
    """The hidden size whose model has the parameter count closest to ``budget``."""

    def count(h: int) -> int:
        return _count(cell, h, config)

    return min(range(1, 4 * budget), key=lambda h: abs(count(h) - budget)) if budget < 10**7 else 1


def _count(cell: str, hidden: int, config: ExperimentConfig) -> int:
    vocab = config.num_symbols + config.num_distractors + 1
    recurrent = len(STACK_ORDER[cell]) * (hidden * (config.embedding_dim + hidden) + 2 * hidden)
    return vocab * config.embedding_dim + recurrent + hidden * config.num_symbols + config.num_symbols


def make_batch(distance: int, batch_size: int, config: ExperimentConfig, generator: torch.Generator):
    """(distance + 2, B) ids and the (B,) symbols to recall: symbol, distractors, query."""
    symbols = torch.randint(0, config.num_symbols, (batch_size,), generator=generator)
    noise = torch.randint(
        config.num_symbols,
        config.num_symbols + config.num_distractors,
        (distance, batch_size),
        generator=generator,
    )
    query = torch.full((1, batch_size), config.num_symbols + config.num_distractors)
    return torch.cat([symbols.view(1, -1), noise, query]), symbols


@dataclass
class Result:
    model: str  # the variant's label
    cell: str
    distance: int
    hidden_size: int
    parameters: int
    accuracy: float
    final_loss: float
    seconds: float


@dataclass
class Report:
    config: ExperimentConfig
    results: list[Result] = field(default_factory=list)
    # label -> [(k, mean ||dloss/dh_{T-k}||)]: models trained at ``gradient_trained_at``,
    # measured over sequences of ``gradient_distance``
    gradient_norms: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    gradient_distance: int = 0
    gradient_trained_at: int = 0

    def accuracy(self, label: str, distance: int) -> float:
        return next(r.accuracy for r in self.results if r.model == label and r.distance == distance)

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "results": [asdict(r) for r in self.results],
            "gradient_distance": self.gradient_distance,
            "gradient_trained_at": self.gradient_trained_at,
            "gradient_norms": {c: [list(x) for x in v] for c, v in self.gradient_norms.items()},
        }


def run_long_range(config: ExperimentConfig, progress=None) -> Report:
    """Train and score every (cell, distance); then measure gradient norms at the longest distance.

    ``progress(message)`` is called as each model finishes.
    """
    report = Report(config)
    budget = _count("lstm", config.lstm_hidden, config)
    vocab = config.num_symbols + config.num_distractors + 1
    longest = max(config.distances)
    measured = max([d for d in config.distances if d <= config.gradient_from] or [min(config.distances)])
    for label, cell, forget_bias in config.variants():
        hidden = config.lstm_hidden if cell == "lstm" else hidden_for_budget(cell, budget, config)
        for distance in config.distances:
            torch.manual_seed(config.seed)
            generator = torch.Generator().manual_seed(config.seed + distance)
            model = Recaller(cell, vocab, config.embedding_dim, hidden, config.num_symbols, forget_bias)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
            start = time.perf_counter()
            loss = torch.zeros(())
            for _ in range(config.steps):
                ids, target = make_batch(distance, config.batch_size, config, generator)
                loss = F.cross_entropy(model(ids), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
                optimizer.step()
            accuracy = _accuracy(model, distance, config)
            result = Result(
                label,
                cell,
                distance,
                hidden,
                sum(p.numel() for p in model.parameters()),
                accuracy,
                float(loss.detach()),
                time.perf_counter() - start,
            )
            report.results.append(result)
            if progress:
                progress(
                    f"{label} d={distance}: accuracy {accuracy:.1%} ({result.parameters:,} parameters, "
                    f"{result.seconds:.0f} s)"
                )
            if distance == measured:
                report.gradient_norms[label] = gradient_norms(model, longest, config)
    report.gradient_distance, report.gradient_trained_at = longest, measured
    return report


@torch.no_grad()
def _accuracy(model: Recaller, distance: int, config: ExperimentConfig) -> float:
    generator = torch.Generator().manual_seed(10_000 + distance)  # never the training batches
    correct = 0
    for start in range(0, config.eval_sequences, 256):
        n = min(256, config.eval_sequences - start)
        ids, target = make_batch(distance, n, config, generator)
        correct += int((model(ids).argmax(-1) == target).sum())
    return correct / config.eval_sequences


def gradient_norms(model: Recaller, distance: int, config: ExperimentConfig) -> list[tuple[int, float]]:
    """Mean over a batch of ||∂loss/∂h_{T-k}|| for k = 0, 1, 3, 10, 30, ... up to the sequence start."""
    generator = torch.Generator().manual_seed(20_000 + distance)
    ids, target = make_batch(distance, 64, config, generator)
    gates = cell_gates(model.rnn, model.cell)[0]
    x_all = model.embedding(ids).detach()  # (T, B, E)
    h = x_all.new_zeros(ids.shape[1], model.rnn.hidden_size)
    c = torch.zeros_like(h)
    hs = []
    for x in x_all:
        h = h.detach().requires_grad_() if not hs else h
        h.retain_grad()
        hs.append(h)
        h, c, _ = step(model.cell, x, h, c, gates)
    h.retain_grad()
    hs.append(h)  # h_T, read by the classifier
    loss = F.cross_entropy(model.head(h), target)
    loss.backward()
    last = len(hs) - 1
    ks = sorted({0, 1, 3} | {k for k in (10, 30, 100, 300, 1000, 3000) if k <= last} | {last})
    return [(k, float(hs[last - k].grad.norm(dim=1).mean())) for k in ks]
