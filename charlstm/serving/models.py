"""A run served by the server: its model, tokenizer, one-token stepper and public description."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from functools import cached_property

from charlstm.stepper import TokenStepper, with_weights
from charlstm.errors import ConfigError


@dataclass
class ServedModel:
    """``name`` is the model's id in the API. ``stepper`` is the public one-token call
    ``stepper(ids, hidden) -> (logits, hidden)``; give another (a wrapped one) to change how it
    steps, as the tests do to slow it down."""

    name: str
    module: torch.nn.Module
    tokenizer: object
    device: torch.device
    description: dict = field(default_factory=dict)  # what /v1/models says beyond the id
    stepper: object = None
    weights: str = "fp32"  # how the stepper holds the recurrent weights (--weights)

    def __post_init__(self) -> None:
        self.module.eval()
        if self.stepper is None:
            self.stepper = TokenStepper(self.module, self.weights)
        self.token_bytes: list[bytes] = self.tokenizer.token_bytes()
        self.token_text = [piece.decode("utf-8", "replace") for piece in self.token_bytes]

    @property
    def config(self):
        return self.module.config

    @cached_property
    def scorer(self) -> torch.nn.Module:
        """The module ``/v1/score`` scores with: the recurrent products in ``weights``, as
        ``Model.score`` does for the same ``--weights``."""
        return with_weights(self.module, self.weights)


def model_name(path: str | os.PathLike) -> str:
    """A run directory's name; for a checkpoint file, its run's name (``best.pt``, ``last.pt``)
    or the file's stem."""
    path = Path(path).resolve()
    if path.is_file() and path.stem in ("best", "last"):
        return path.parent.name
    return path.stem if path.is_file() else path.name


def load_served(
    path: str | os.PathLike, device: str = "auto", name: str | None = None, weights: str = "fp32"
) -> ServedModel:
    """Load and check the model at ``path`` with the public API (``charlstm.load``); ``weights``
    as ``--weights`` (fp32, int8, bf16)."""
    from charlstm.api import load

    lm = load(path, device=device, weights=weights)
    config, info = lm.config, lm.info
    description = {
        "parameters": info.parameters,
        "architecture": f"{config.cell} {config.num_layers}x{config.hidden_size}",
        "tokenizer": info.tokenizer,
        "vocab_size": info.vocab_size,
        "validation_loss": info.best_val_loss,  # nats per token; None when never measured
        "steps": info.step,
        "trained_on": info.trained_on,
        "num_layers": config.num_layers,
        "hidden_size": config.hidden_size,
        "cell": config.cell,
        "weights": weights,
    }
    return ServedModel(name or model_name(path), lm.module, lm.tokenizer, lm.device, description, weights=weights)


def check_names(models: list[ServedModel]) -> None:
    seen: dict[str, int] = {}
    for model in models:
        seen[model.name] = seen.get(model.name, 0) + 1
    twice = [name for name, count in seen.items() if count > 1]
    if twice:
        raise ConfigError(f"two runs would be served as {twice[0]!r}; serve runs with different directory names")
