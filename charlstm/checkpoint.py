"""The one place that saves and loads checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts:

    format, format_version        "charlstm", FORMAT_VERSION
    model_config, train_config    dicts of the config dataclasses
    tokenizer                     the tokenizer's state (char vocabulary or SentencePiece model)
    model                         the model's state_dict (CPU tensors)
    weights_sha256                checksum of the model tensors, checked on every load
    optimizer, train_state        what training needs to go on (step, epoch, RNG states, ...)
    metrics, corpus               the evaluation history and what the model was trained on

It is loaded with ``weights_only=True`` passed explicitly, so a pickle that would run code is
refused, never run, and there is no fallback to an unsafe load. Writes are atomic: a temporary
file in the same directory, flushed and fsynced, then ``os.replace``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import torch

from charlstm.config import ModelConfig
from charlstm.errors import CheckpointError
from charlstm.model import LSTMLanguageModel, upgrade_state_dict
from charlstm.tokenizers import tokenizer_from_state

FORMAT = "charlstm"
FORMAT_VERSION = 1
BEST = "best.pt"
LAST = "last.pt"
TEMP_PREFIX = ".tmp-"


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
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".pt", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the checkpoint ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        e = _os_error(error)
        if e is not None:  # disk full, file too large, permissions, ...
            kept = "the previous checkpoint there is kept" if path.exists() else "nothing was written"
            raise CheckpointError(
                f"{path}: cannot write the checkpoint ({e.strerror or e}); {kept}. Free some disk space "
                "(or fix the directory's permissions) and continue with: charlstm train --resume "
                f"{path.parent}"
            ) from None
        raise
    _fsync_dir(path.parent)
    return path


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind ``error``, if any: torch.save can mask a failed write with a
    RuntimeError of its own ("unexpected pos")."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its best checkpoint, else its last)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LAST):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"{path}: no {BEST} or {LAST} in this directory; is it a charlstm run directory?"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and check a checkpoint safely (``weights_only=True``); never runs code from the file."""
    path = resolve_checkpoint(path)
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
    return payload


def model_from_checkpoint(payload: dict, device: str | torch.device = "cpu", path: str = "checkpoint"):
    """Rebuild the model and tokenizer; refuses non-finite or mismatched weights."""
    try:
        config = ModelConfig.from_dict(payload["model_config"])
        tokenizer = tokenizer_from_state(payload["tokenizer"])
    except Exception as e:
        raise CheckpointError(
            f"{path}: the checkpoint's model or tokenizer settings are invalid ({e})"
        ) from None
    model = LSTMLanguageModel(config)
    state = upgrade_state_dict(payload["model"])
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


def cleanup_temp_files(directory: str | os.PathLike) -> int:
    """Remove temporary files left by an interrupted save; they are never checkpoints."""
    removed = 0
    for tmp in Path(directory).glob(TEMP_PREFIX + "*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
