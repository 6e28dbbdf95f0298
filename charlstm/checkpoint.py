"""The one place that defines, saves and loads checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts:

    format, format_version        "charlstm", FORMAT_VERSION
    model_config, train_config    dicts of the config dataclasses
    tokenizer                     the tokenizer's record (char vocabulary or SentencePiece model)
    model                         the model's state_dict (CPU tensors)
    weights_sha256                checksum of the model tensors, checked on every load
    optimizer                     the optimizer's state_dict
    train_state                   ``TrainState``: step, epoch, data position, RNG states, ...
    metrics, corpus               the evaluation history and what the model was trained on
    init_from                     (fine-tuned runs) path, sha256 and step of the checkpoint started from

It is loaded with ``weights_only=True`` passed explicitly, so a pickle that would run code is
refused, never run, and there is no fallback to an unsafe load. Writes are atomic
(``atomic.atomic_write``): a crash leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.atomic import atomic_write
from charlstm.config import ModelConfig
from charlstm.errors import CheckpointError
from charlstm.model import LanguageModel
from charlstm.tokenizers import tokenizer_from_dict

FORMAT = "charlstm"
FORMAT_VERSION = 1
BEST = "best.pt"  # the lowest validation loss so far
LAST = "last.pt"  # where training is: what --resume continues from


@dataclass
class TrainState:
    """What a checkpoint records about training, beyond the weights and the optimizer: enough for
    ``--resume`` to go on exactly where training stopped.

    Lists ``*_by_rank`` have one entry per torchrun process (one in a single process): each
    process carries its own streams' hidden state and draws its own dropout masks.
    """

    step: int = 0
    epoch: int = 0
    window: int = 0  # position in the epoch: the next window to train on
    tokens: int = 0  # tokens this process has trained on
    elapsed: float = 0.0  # seconds of training
    best_val_loss: float = math.inf
    metrics: list[dict] = field(default_factory=list)  # one record per evaluation
    hidden_by_rank: list[tuple[torch.Tensor, ...] | list[torch.Tensor] | None] = field(default_factory=lambda: [None])
    torch_rng_by_rank: list[torch.Tensor | None] = field(default_factory=lambda: [None])
    cuda_rng: list[torch.Tensor] | None = None

    @property
    def world_size(self) -> int:
        return len(self.torch_rng_by_rank)

    def to_checkpoint(self) -> dict:
        """The ``train_state`` entry of a checkpoint (``metrics`` is stored beside it)."""
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "window": self.window,
            "tokens": self.tokens,
            "elapsed": self.elapsed,
            "best_val_loss": self.best_val_loss,
            "hidden": self.hidden_by_rank[0],
            "torch_rng": self.torch_rng_by_rank[0],
        }
        if self.cuda_rng is not None:
            record["cuda_rng"] = self.cuda_rng
        if self.world_size > 1:
            record["hidden_by_rank"] = self.hidden_by_rank
            record["torch_rng_by_rank"] = self.torch_rng_by_rank
            record["world_size"] = self.world_size
        return record

    @classmethod
    def from_checkpoint(cls, payload: dict, steps_per_epoch: int | None = None) -> TrainState:
        """The training state of a loaded checkpoint (also one written before ``window`` was
        recorded: then it is derived from the step, given ``steps_per_epoch``)."""
        state = payload["train_state"]
        window = state.get("window")
        if window is None:
            window = state["step"] - state["epoch"] * (steps_per_epoch or 0)
        return cls(
            step=state["step"],
            epoch=state["epoch"],
            window=window,
            tokens=state["tokens"],
            elapsed=state["elapsed"],
            best_val_loss=state["best_val_loss"],
            metrics=list(payload.get("metrics", [])),
            hidden_by_rank=list(state.get("hidden_by_rank", [state.get("hidden")])),
            torch_rng_by_rank=list(state.get("torch_rng_by_rank", [state.get("torch_rng")])),
            cuda_rng=state.get("cuda_rng") or None,
        )


def make_payload(
    *, model, model_config, train_config, tokenizer, optimizer, train_state: TrainState, corpus: dict, **extra
) -> dict:
    """Everything a checkpoint holds, as plain data (weights on the CPU, so any device loads it).
    ``extra``: further plain records (``init_from``: what a fine-tuned run started from; ``run``:
    how the run was started and how it stopped)."""
    return {
        **{k: v for k, v in extra.items() if v is not None},
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "train_state": train_state.to_checkpoint(),
        "metrics": train_state.metrics,
        "corpus": corpus,
    }


def weights_checksum(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash leaves the old file or the new one."""
    path = Path(path)
    payload = dict(payload, format=FORMAT, format_version=FORMAT_VERSION)
    payload["weights_sha256"] = weights_checksum(payload["model"])
    try:
        return atomic_write(path, lambda f: torch.save(payload, f))
    except BaseException as error:
        e = _os_error(error)
        if e is None:
            raise
        # Disk full, file too large, permissions, ...
        kept = "the previous checkpoint there is kept" if path.exists() else "nothing was written"
        raise CheckpointError(
            f"{path}: cannot write the checkpoint ({e.strerror or e}); {kept}. Free some disk space "
            "(or fix the directory's permissions) and continue with: charlstm train --resume "
            f"{path.parent}"
        ) from None


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error``, if any: torch.save can mask a failed write with a
    RuntimeError of its own ("unexpected pos")."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def find_checkpoint(path: str | os.PathLike, prefer: tuple[str, ...] = (BEST, LAST)) -> Path:
    """A checkpoint file as it is, or a run directory's first checkpoint in ``prefer`` order
    (``sample`` and ``eval``: the best, else the last; ``--resume``: the last)."""
    path = Path(path)
    if path.is_dir():
        for name in prefer:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: no {' or '.join(prefer)} in this directory; is it a charlstm run directory?"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | os.PathLike, prefer: tuple[str, ...] = (BEST, LAST)) -> dict:
    """Load and check a checkpoint safely (``weights_only=True``); never runs code from the file."""
    path = find_checkpoint(path, prefer)
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a charlstm checkpoint (not a PyTorch zip file, or truncated)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types; none of them may escape as a traceback
        text = str(e)
        if "Weights only load failed" in text or "Unsupported" in text:
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than plain data "
                "(a pickle that could run code); it was not loaded"
            ) from None
        raise CheckpointError(
            f"{path}: cannot read checkpoint (corrupt or truncated: {text.splitlines()[0][:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a charlstm checkpoint")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this charlstm reads "
            f"(version {FORMAT_VERSION}); upgrade charlstm"
        )
    missing = [k for k in ("model_config", "tokenizer", "model", "weights_sha256") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a complete charlstm checkpoint (missing {', '.join(missing)})")
    if weights_checksum(payload["model"]) != payload["weights_sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch: the weights are corrupt; use another checkpoint")
    payload["model"] = upgrade_state_dict(payload["model"])
    return payload


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved before the cell type was a setting named the layer ``lstm``; it is ``rnn`` now."""
    return {("rnn." + k[5:] if k.startswith("lstm.") else k): v for k, v in state.items()}


def model_from_checkpoint(payload: dict, device: str | torch.device = "cpu", path: str = "checkpoint"):
    """Rebuild the model and tokenizer; refuses non-finite or mismatched weights."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        tokenizer = tokenizer_from_dict(payload["tokenizer"])
    except Exception as e:
        raise CheckpointError(
            f"{path}: the checkpoint's model or tokenizer settings are invalid ({e})"
        ) from None
    model = LanguageModel(config)
    state = payload["model"]
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    if problems:
        raise CheckpointError(f"{path}: weights do not match the model: {'; '.join(problems)}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: refused: non-finite weights (NaN or inf) in {', '.join(bad)}")
    model.load_state_dict(state)
    return model.to(device), tokenizer
