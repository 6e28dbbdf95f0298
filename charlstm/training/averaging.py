"""Weight averaging (``--ema``): an exponential moving average of the weights, kept beside them.

After each optimizer step the average moves towards the weights:
``average += (1 - d) * (weights - average)``, one fused ``torch._foreach_lerp_`` over all the
parameters. The decay ``d`` is ``min(decay, n / (n + 1))`` at the ``n``-th update (from 0): the
plain mean of the weights so far until that reaches ``--ema``, so the average never holds the
random start, and ``--ema 0.999`` averages over about the last 1,000 steps even in a short run. Validation, and so ``best.pt``, use
the average; ``last.pt`` keeps the raw weights, which training goes on from, and the average
with its update count, so ``--resume`` continues both exactly.
"""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """The moving average of ``model``'s parameters, held in a copy of the model (``model``
    attribute: evaluate it like any other). ``state``: a checkpoint's ``ema`` record to go on from;
    None: the average starts at the model's current weights."""

    def __init__(self, model: torch.nn.Module, decay: float, state: dict | None = None) -> None:
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model)  # draws no random numbers: a seeded run stays the same
        self.model.requires_grad_(False)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.updates = int(state["updates"])
        self._weights = list(model.parameters())
        self._average = list(self.model.parameters())

    def current_decay(self) -> float:
        return min(self.decay, self.updates / (self.updates + 1))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the weights (after an optimizer step)."""
        torch._foreach_lerp_(self._average, self._weights, 1.0 - self.current_decay())
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights as the model's state dict (CPU tensors, as checkpoints hold them)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

    def to_checkpoint(self) -> dict:
        """The ``ema`` entry of ``last.pt``."""
        return {"decay": self.decay, "updates": self.updates, "model": self.state_dict()}
