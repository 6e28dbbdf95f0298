"""The log-probabilities of the tokens drawn, summed a chunk of steps at a time.

Per row, the sum of the log-probabilities (nats) of the tokens it drew, under the model's own
softmax at temperature 1 before any filter (after the neural cache's mixture, where there is
one): the figure ``sample --json`` reports as ``mean_logprob``. Keeping the logits of the last
``CHUNK`` steps and taking one ``log_softmax`` over all of them costs far less than one per step.
"""

from __future__ import annotations

import torch


class LogprobBook:
    """The logits of the last ``CHUNK`` steps and the tokens drawn from them, kept so that the
    log-probabilities are summed a chunk at a time instead of once per token."""

    CHUNK = 64

    def __init__(self, batch: int):
        self.batch = batch
        self.sums = [0.0] * batch
        self.counts = [0] * batch
        self.current: torch.Tensor | None = None  # (B, V): the logits the next token is drawn from
        self.k = 0  # tokens drawn in this chunk

    def start(self, logits: torch.Tensor) -> None:
        self.logits = logits.new_empty(self.CHUNK + 1, *logits.shape)  # (C + 1, B, V)
        self.ids = torch.empty(self.CHUNK, self.batch, dtype=torch.long, device=logits.device)  # (C, B)
        self.skipped: list[tuple[int, list[int]]] = []  # (step in chunk, rows that do not count)
        self.logit_slots, self.id_slots = self.logits.unbind(0), self.ids.unbind(0)  # views, made once
        self.current = self.logit_slots[0].copy_(logits)

    def next_slot(self) -> torch.Tensor:
        """Where the next tokens (B,) go."""
        return self.id_slots[self.k]

    def drawn(self, finished: list[int] | None = None) -> None:
        """The next tokens are in ``next_slot()``; ``finished`` rows do not count them."""
        if finished:
            self.skipped.append((self.k, finished))
        self.k += 1

    def next_logits(self) -> torch.Tensor:
        """Where the logits after the tokens just drawn go (they become ``current``)."""
        if self.k == self.CHUNK:
            self._add(*self._chunk())
            self.k, self.skipped = 0, []
        self.current = self.logit_slots[self.k]
        return self.current

    def _chunk(self) -> tuple[list[float], list[int]]:
        """Per row, the sum of the log-probabilities of this chunk's counted tokens, and their count."""
        k = self.k
        if k == 0:
            return [0.0] * self.batch, [0] * self.batch
        logprobs = self.logits[:k].float().log_softmax(dim=-1)  # (k, B, V): the model's own, unfiltered
        chosen = logprobs.gather(2, self.ids[:k].unsqueeze(2)).squeeze(2).double()  # (k, B)
        counted = torch.ones_like(chosen, dtype=torch.bool)
        for step, rows in self.skipped:
            counted[step, rows] = False
        sums = chosen.masked_fill(~counted, 0.0).sum(dim=0).tolist()  # (B,)
        return sums, counted.sum(dim=0).tolist()

    def _add(self, sums: list[float], counts: list[int]) -> None:
        self.sums = [a + b for a, b in zip(self.sums, sums)]
        self.counts = [a + b for a, b in zip(self.counts, counts)]

    def totals(self) -> tuple[list[float], list[int]]:
        if self.current is None:
            return list(self.sums), list(self.counts)
        sums, counts = self._chunk()
        return [a + b for a, b in zip(self.sums, sums)], [a + b for a, b in zip(self.counts, counts)]
