"""The synthetic memory tasks of the long-range experiment, and the small model that learns them.

Both tasks put ``d`` steps of something useless between what must be remembered and where it is
asked for, so the answer has to be carried across all ``d`` steps:

- **recall**: one of ``num_symbols`` symbols, then ``d`` random distractor symbols, then a query;
  at the query, name the first symbol (chance: 1 / ``num_symbols``).
- **copy**: ``copy_length`` symbols, then ``d`` blanks, then ``copy_length`` queries; at the
  queries, repeat the symbols in order (the "copying memory" problem of Hochreiter & Schmidhuber
  1997 and Arjovsky et al. 2016): order matters, and several symbols must be kept at once.

Ids: symbols ``[0, num_symbols)``, then the fillers (distractors or the blank), then the query.
A batch is ``(T, B)`` ids and ``(answers, B)`` targets, the answers read at the last steps.

Held out: copy has only ``num_symbols ** copy_length`` different sequences per distance (4,096),
so one in seven symbol tuples is kept for scoring and never trained on; a recall sequence's
``d`` random distractors make a repeat between training and scoring vanishingly rare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from charlstm.cells import init_forget_bias, recurrent_shapes
from charlstm.model import RNN_CLASSES

HELD_OUT_EVERY = 7  # copy: symbol tuples whose index is a multiple of this are only scored


@dataclass(frozen=True)
class MemoryTask:
    name: str  # one of analysis.config.MEMORY_TASKS
    num_symbols: int = 8  # what must be remembered
    num_distractors: int = 8  # recall's noise in between (copy's filler is one blank)
    copy_length: int = 4  # how many symbols copy must repeat

    @property
    def fillers(self) -> int:
        return self.num_distractors if self.name == "recall" else 1

    @property
    def vocab_size(self) -> int:
        return self.num_symbols + self.fillers + 1  # symbols, fillers, the query

    @property
    def answers(self) -> int:
        """How many outputs are scored, read at the last steps of the sequence."""
        return 1 if self.name == "recall" else self.copy_length

    def batch(
        self, distance: int, batch_size: int, generator: torch.Generator, held_out: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, B)`` ids and the ``(answers, B)`` symbols to name, drawn with ``generator``;
        ``held_out``: from the sequences kept for scoring."""
        n, query = self.num_symbols, self.num_symbols + self.fillers
        if self.name == "recall":
            symbols = torch.randint(0, n, (1, batch_size), generator=generator)
            filler = torch.randint(n, n + self.fillers, (distance, batch_size), generator=generator)
        else:
            symbols = self._copy_symbols(batch_size, generator, held_out)
            filler = torch.full((distance, batch_size), n)  # the blank
        queries = torch.full((self.answers, batch_size), query)
        return torch.cat([symbols, filler, queries]), symbols

    def _copy_symbols(self, batch_size: int, generator: torch.Generator, held_out: bool) -> torch.Tensor:
        """``(copy_length, B)`` symbols, their tuple drawn from the scored or the trained share."""
        index = torch.arange(self.num_symbols**self.copy_length)
        pool = index[(index % HELD_OUT_EVERY == 0) == held_out]
        chosen = pool[torch.randint(0, len(pool), (batch_size,), generator=generator)]
        digits = self.num_symbols ** torch.arange(self.copy_length).view(-1, 1)
        return chosen.view(1, -1) // digits % self.num_symbols


class MemoryModel(nn.Module):
    """Embedding -> one recurrent layer (fused: oneDNN on CPU, cuDNN on GPU) -> a classifier over
    the symbols, read at the task's last ``answers`` steps."""

    def __init__(
        self, cell: str, task: MemoryTask, embedding_dim: int, hidden_size: int, forget_bias: float | None
    ):
        super().__init__()
        self.cell, self.answers = cell, task.answers
        self.embedding = nn.Embedding(task.vocab_size, embedding_dim)
        self.rnn = RNN_CLASSES[cell](embedding_dim, hidden_size)
        self.head = nn.Linear(hidden_size, task.num_symbols)
        if cell == "lstm":
            init_forget_bias(self.rnn, forget_bias)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(ids))  # (T, B, H)
        return self.head(out[-self.answers :])  # (answers, B, num_symbols)


def count_parameters(cell: str, hidden: int, task: MemoryTask, embedding_dim: int) -> int:
    """``MemoryModel(cell, task, embedding_dim, hidden, ...)``'s parameters, computed without building it."""
    recurrent = sum(math.prod(shape) for shape in recurrent_shapes(cell, embedding_dim, hidden).values())
    return task.vocab_size * embedding_dim + recurrent + hidden * task.num_symbols + task.num_symbols


def hidden_for_budget(cell: str, budget: int, task: MemoryTask, embedding_dim: int) -> int:
    """The hidden size whose model has the parameter count closest to ``budget``."""
    sizes = range(1, 4 * int(budget**0.5) + 2)
    return min(sizes, key=lambda h: abs(count_parameters(cell, h, task, embedding_dim) - budget))


@torch.no_grad()
def accuracy(model: MemoryModel, task: MemoryTask, distance: int, sequences: int, seed: int) -> float:
    """The share of symbols named right (per symbol, for copy) on ``sequences`` held-out sequences,
    drawn with their own generator from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    correct = total = 0
    for start in range(0, sequences, 256):
        ids, target = task.batch(distance, min(256, sequences - start), generator, held_out=True)
        predicted = model(ids.to(device)).argmax(-1).cpu()
        correct += int((predicted == target).sum())
        total += target.numel()
    return correct / total
