"""The one place that defines, saves and loads checkpoints.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings, lists and dicts:

    format, format_version        "charlstm", FORMAT_VERSION
    model_config, train_config    dicts of the config dataclasses
    tokenizer                     the tokenizer's record (char vocabulary or SentencePiece model)
    model                         the model's state_dict (CPU tensors)
    payload_sha256                checksum of everything else in the file (``digest.payload_sha256``),
                                  checked on every load (version 1 files: ``weights_sha256``, of
                                  the model tensors only)
    optimizer                     the optimizer's state_dict
    train_state                   ``TrainState``: step, epoch, data position, RNG states, ...
    metrics, corpus               the evaluation history and what the model was trained on
    init_from                     (fine-tuned runs) path, sha256 and step of the checkpoint started from

It is loaded with ``weights_only=True`` passed explicitly, so a pickle that would run code is
refused, never run, and there is no fallback to an unsafe load. Writes are atomic
(``atomic.atomic_write``): a crash leaves the previous checkpoint intact.

A checkpoint may come from someone else, so nothing in it is trusted before it is checked: the zip
must be uncompressed and no larger inside than outside, every tensor must be dense and within its
storage, the checksum must match, and the model config (types, sizes, the parameters it implies
against the file's size), the tokenizer record and every weight's dtype and shape are checked
before a model is built (``charlstm.runs.checks``).
"""

from __future__ import annotations

import hashlib
import math
import os
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.atomic import atomic_write
from charlstm.errors import CheckpointError
from charlstm.model import LanguageModel, optimizer_order
from charlstm.runs.checks import check_model, check_model_config
from charlstm.runs.digest import UnsupportedData, payload_sha256
from charlstm.runs.folder import is_model_folder, load_folder

FORMAT = "charlstm"
FORMAT_VERSION = 2  # 2: payload_sha256 over everything; 1: weights_sha256 over the weights only
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


def stop_reason(payload: dict) -> str | None:
    """Why the run of a loaded checkpoint stopped training, from its ``run`` record (None: not
    recorded). Checkpoints written before the name was ``stop_reason`` say ``stopped_by``."""
    run = payload.get("run")
    if not isinstance(run, dict):
        return None
    return run.get("stop_reason", run.get("stopped_by"))


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
    payload = {k: v for k, v in payload.items() if k not in ("weights_sha256", "payload_sha256")}
    payload.update(format=FORMAT, format_version=FORMAT_VERSION)
    payload["payload_sha256"] = payload_sha256(payload)
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
        if is_model_folder(path):  # an exported folder (charlstm export --format safetensors)
            return path
        raise CheckpointError(
            f"{path}: no {' or '.join(prefer)} in this directory; is it a charlstm run directory?"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | os.PathLike, prefer: tuple[str, ...] = (BEST, LAST)) -> dict:
    """Load and check a checkpoint safely (``weights_only=True``); never runs code from the file.
    The payload's structure, checksum and model config are checked (``check_model`` checks the
    weights against the config, before a model is built).

    A run's ``best.pt`` or ``last.pt`` that fails to load names the other one when that one loads
    (with its step and a command that uses it), so a damaged file never hides a good one."""
    path = find_checkpoint(path, prefer)
    if is_model_folder(path):
        return load_folder(path)  # safetensors + JSON, checked as carefully (charlstm.runs.folder)
    try:
        return _load_file(path)
    except CheckpointError as e:
        other = _another_that_loads(path)
        if other is None:
            raise
        message = str(e).removesuffix(_USE_ANOTHER)
        raise CheckpointError(f"{message}; {other}") from None


_USE_ANOTHER = "; use another checkpoint"


def _another_that_loads(path: Path) -> str | None:
    """For a run's ``best.pt`` / ``last.pt`` that failed: the other one, if it loads, said as
    "RUN/last.pt (step N) loads: charlstm sample RUN/last.pt"; else None."""
    if path.name not in (BEST, LAST):
        return None
    other = path.with_name(LAST if path.name == BEST else BEST)
    if not other.is_file():
        return None
    try:
        payload = _load_file(other)
    except CheckpointError:
        return None
    state = payload.get("train_state")
    step = state.get("step") if isinstance(state, dict) else None
    at = f" (step {step:,})" if isinstance(step, int) else ""
    return f"{other}{at} loads: charlstm sample {shlex.quote(str(other))}"


def _load_file(path: Path) -> dict:
    """``load_checkpoint`` of one checkpoint file."""
    file_size = _check_zip(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types; none of them may escape as a traceback
        text = str(e)
        if "Weights only load failed" in text or "Unsupported" in text:
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects other than plain data "
                "(a pickle that could run code); it was not loaded"
            ) from None
        first = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt or truncated: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a charlstm checkpoint")
    version = payload.get("format_version")
    if type(version) is not int or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{path}: checkpoint format version {str(version)[:40]} is newer than this charlstm reads "
            f"(version {FORMAT_VERSION}); upgrade charlstm"
        )
    checksum = "weights_sha256" if version == 1 else "payload_sha256"
    missing = [k for k in ("model_config", "tokenizer", "model", checksum) if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a complete charlstm checkpoint (missing {', '.join(missing)})")
    if not isinstance(payload["model"], dict) or not all(isinstance(k, str) for k in payload["model"]):
        raise CheckpointError(f"{path}: not a complete charlstm checkpoint (its weights are not a state dict)")
    try:
        everything = payload_sha256({k: v for k, v in payload.items() if k != "payload_sha256"})
        expected = payload[checksum]
        actual = everything if version > 1 else weights_checksum(_tensors_only(payload["model"], path))
    except (UnsupportedData, RecursionError) as e:
        raise CheckpointError(f"{path}: refused: {str(e)[:300]}") from None
    if actual != expected:
        what = "the file is" if version > 1 else "the weights are"
        raise CheckpointError(f"{path}: checksum mismatch: {what} corrupt{_USE_ANOTHER}")
    payload["model"] = upgrade_state_dict(payload["model"])
    check_model_config(payload["model_config"], path, file_size)
    return payload


def _check_zip(path: Path) -> int:
    """The file's size, once it is known to be a zip that unpacks to no more than its own size
    (``torch.save`` stores entries uncompressed: a compressed one could unpack to any size)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({e.strerror or e})") from None
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        raise CheckpointError(f"{path}: not a charlstm checkpoint (not a PyTorch zip file, or truncated)") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries) or sum(e.file_size for e in entries) > size:
        raise CheckpointError(
            f"{path}: refused: not a charlstm checkpoint (its zip entries are compressed or larger than the file)"
        )
    return size


def _tensors_only(state: dict, path) -> dict:
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: weights do not match the model: {bad[0][:100]} is not a tensor")
    return state


def upgrade_state_dict(state: dict) -> dict:
    """Weights saved before the cell type was a setting named the layer ``lstm``; it is ``rnn`` now."""
    return {("rnn." + k[5:] if k.startswith("lstm.") else k): v for k, v in state.items()}


def model_from_checkpoint(payload: dict, device: str | torch.device = "cpu", path: str = "checkpoint"):
    """Rebuild the model and tokenizer (``check_model`` first: nothing unchecked is built)."""
    config, tokenizer = check_model(payload, path)
    model = LanguageModel(config)
    model.load_state_dict(payload["model"])
    model.second_moments = second_moments(payload.get("optimizer"), model)
    return model.to(device), tokenizer


def second_moments(optimizer, model: LanguageModel) -> dict[str, torch.Tensor] | None:
    """AdamW's second moment of each parameter from a checkpoint's optimizer state (CPU, fp32), by
    parameter name; None where there is none that fits the model (an exported folder, a state of
    other shapes, negative or not finite values): dynamic evaluation then has no prior."""
    state = optimizer.get("state") if isinstance(optimizer, dict) else None
    names = optimizer_order(model)
    if not isinstance(state, dict) or len(state) != len(names):
        return None
    params = dict(model.named_parameters())
    moments = {}
    for index, name in enumerate(names):
        entry = state.get(index)
        v = entry.get("exp_avg_sq") if isinstance(entry, dict) else None
        if not isinstance(v, torch.Tensor) or v.shape != params[name].shape or not v.is_floating_point():
            return None
        v = v.detach().to("cpu", torch.float32)
        if not bool(torch.isfinite(v).all()) or bool((v < 0).any()):
            return None
        moments[name] = v
    return moments


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", prefer: tuple[str, ...] = (BEST, LAST)
) -> tuple[LanguageModel, object, dict]:
    """Load and check the checkpoint at ``path`` (a run directory: its first of ``prefer``) and
    build its model on ``device``: the model, its tokenizer and the checked payload."""
    payload = load_checkpoint(path, prefer)
    model, tokenizer = model_from_checkpoint(payload, device, str(path))
    return model, tokenizer, payload


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded checkpoint says about its model."""

    parameters: int
    tokenizer: str  # char, byte, bpe or unigram
    vocab_size: int
    step: int | None  # training steps behind the weights
    best_val_loss: float | None  # nats per token, None when never measured
    trained_on: str | None  # the text's name (a path, or the built-in corpus)
    bptt: int | None = None  # the length it trained with (None when not recorded or implausible)


def model_info(model: LanguageModel, tokenizer, payload: dict) -> ModelInfo:
    """The ``ModelInfo`` of a checked payload; an exported folder's lacks the training records."""
    saved = payload.get("train_config")
    bptt = saved.get("bptt") if isinstance(saved, dict) else None
    state = payload.get("train_state") if isinstance(payload.get("train_state"), dict) else {}
    corpus = payload.get("corpus") if isinstance(payload.get("corpus"), dict) else {}
    best, step = state.get("best_val_loss"), state.get("step")
    return ModelInfo(
        parameters=model.num_parameters(),
        tokenizer=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        step=step if type(step) is int else None,
        best_val_loss=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
        trained_on=corpus.get("name") if isinstance(corpus.get("name"), str) else None,
        bptt=bptt if type(bptt) is int and 1 <= bptt <= 1 << 20 else None,
    )
