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
before a model is built (``check_model``).
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.atomic import atomic_write
from charlstm.config import CELLS, ModelConfig, TrainConfig
from charlstm.runs.digest import UnsupportedData, check_tensor, payload_sha256
from charlstm.errors import CheckpointError
from charlstm.model import LanguageModel
from charlstm.data.tokenizers import Tokenizer, tokenizer_from_dict

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
        raise CheckpointError(
            f"{path}: no {' or '.join(prefer)} in this directory; is it a charlstm run directory?"
        )
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file or run directory")
    return path


def load_checkpoint(path: str | os.PathLike, prefer: tuple[str, ...] = (BEST, LAST)) -> dict:
    """Load and check a checkpoint safely (``weights_only=True``); never runs code from the file.
    The payload's structure, checksum and model config are checked (``check_model`` checks the
    weights against the config, before a model is built)."""
    path = find_checkpoint(path, prefer)
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
        raise CheckpointError(f"{path}: checksum mismatch: {what} corrupt; use another checkpoint")
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


# ------------------------------------------------------------------------------- checking a model

# Limits on what a checkpoint's model config may ask for: far above anything charlstm trains, far
# below what would exhaust memory before the weights could be checked.
MAX_SIZES = {"vocab_size": 1 << 24, "embedding_dim": 1 << 16, "hidden_size": 1 << 16, "num_layers": 256}
MAX_PARAMETERS = 2_000_000_000
# Every weight is in the file, at 2 bytes (fp16) or more each: a config implying more parameters
# than the file has bytes (plus some slack) cannot be the file's own.
PARAMETER_SLACK = 1 << 20
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_model_config(record, path, file_size: int | None = None) -> ModelConfig:
    """The model config of a checkpoint, once its values have the right types, its sizes are
    within ``MAX_SIZES`` and the parameters it implies within ``MAX_PARAMETERS`` (and, given the
    file's size, within what the file can hold)."""
    if not isinstance(record, Mapping):
        raise CheckpointError(f"{path}: the checkpoint's model_config is a {type(record).__name__}, not a dict")
    problems = []
    for name, limit in MAX_SIZES.items():
        value = record.get(name)
        if name not in record and name != "vocab_size":
            continue  # an older checkpoint: the default
        if type(value) is not int:
            problems.append(f"{name} is {_shown(value)}, not a whole number")
        elif not (2 if name == "vocab_size" else 1) <= value <= limit:
            low = 2 if name == "vocab_size" else 1
            problems.append(f"{name} {value} is outside {low}..{limit:,}")
    if "cell" in record and record["cell"] not in CELLS:
        problems.append(f"cell {_shown(record['cell'])} is not one of {', '.join(CELLS)}")
    dropout = record.get("dropout", 0.0)
    if type(dropout) not in (int, float) or not 0.0 <= dropout < 1.0:
        problems.append(f"dropout {_shown(dropout)} is not a number in [0, 1)")
    if type(record.get("tie_weights", False)) is not bool:
        problems.append(f"tie_weights is {_shown(record['tie_weights'])}, not true or false")
    if problems:
        raise CheckpointError(f"{path}: refused: the checkpoint's model config is invalid: {'; '.join(problems)}")
    try:
        config = ModelConfig.from_dict(dict(record))
    except Exception as e:  # ConfigError, or a TypeError for a missing field
        raise CheckpointError(f"{path}: refused: the checkpoint's model config is invalid ({str(e)[:300]})") from None
    parameters = count_parameters(config)
    if parameters > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: refused: the checkpoint's model config implies {parameters:,} parameters "
            f"({_sizes(config)}), more than the limit of {MAX_PARAMETERS:,}"
        )
    if file_size is not None and parameters > file_size + PARAMETER_SLACK:
        raise CheckpointError(
            f"{path}: refused: the checkpoint's model config implies {parameters:,} parameters "
            f"({_sizes(config)}), more than its {file_size:,}-byte file can hold"
        )
    return config


def _shown(value) -> str:
    text = repr(value) if isinstance(value, (str, bytes, int, float, bool, type(None))) else type(value).__name__
    return text[:60] + ("..." if len(text) > 60 else "")


def _sizes(config: ModelConfig) -> str:
    return ", ".join(f"{name} {getattr(config, name):,}" for name in MAX_SIZES)


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of ``LanguageModel(config)``, computed without building it."""
    gates = GATES[config.cell] * config.hidden_size
    shapes = {"embedding.weight": (config.vocab_size, config.embedding_dim)}
    for layer in range(config.num_layers):
        inputs = config.embedding_dim if layer == 0 else config.hidden_size
        shapes[f"rnn.weight_ih_l{layer}"] = (gates, inputs)
        shapes[f"rnn.weight_hh_l{layer}"] = (gates, config.hidden_size)
        shapes[f"rnn.bias_ih_l{layer}"] = (gates,)
        shapes[f"rnn.bias_hh_l{layer}"] = (gates,)
    shapes["head.weight"] = (config.vocab_size, config.hidden_size)
    shapes["head.bias"] = (config.vocab_size,)
    return shapes


def count_parameters(config: ModelConfig) -> int:
    """``LanguageModel(config).num_parameters()``, computed without building it."""
    total = sum(math.prod(shape) for shape in expected_shapes(config).values())
    if config.tie_weights:
        total -= config.vocab_size * config.hidden_size
    return total


def check_model(payload: dict, path: str | os.PathLike = "checkpoint") -> tuple[ModelConfig, Tokenizer]:
    """The checked model config and tokenizer of a loaded checkpoint: the config's values, the
    tokenizer record (its vocabulary the config's ``vocab_size``) and every weight's dtype, shape
    and values are checked before anything the size of the model is allocated."""
    config = check_model_config(payload.get("model_config"), path)
    try:
        tokenizer = tokenizer_from_dict(payload.get("tokenizer"))
    except Exception as e:
        raise CheckpointError(f"{path}: refused: the checkpoint's tokenizer record is invalid: {str(e)[:300]}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: refused: the checkpoint's tokenizer has {tokenizer.vocab_size:,} tokens but its model "
            f"config says vocab_size {config.vocab_size:,}"
        )
    state = payload.get("model")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: weights do not match the model: they are not a state dict")
    expected = expected_shapes(config)
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {str(k)[:100]}" for k in state if k not in expected]
    for k, shape in expected.items():
        v = state.get(k)
        if k not in state:
            continue
        if not isinstance(v, torch.Tensor):
            problems.append(f"{k} is a {type(v).__name__}, not a tensor")
        elif v.dtype not in WEIGHT_DTYPES:
            problems.append(f"{k} has dtype {v.dtype}, expected floating-point weights")
        elif tuple(v.shape) != shape:
            problems.append(f"{k} has shape {tuple(v.shape)}, expected {shape}")
        else:
            try:
                check_tensor(v, k)
            except UnsupportedData as e:
                problems.append(str(e))
    if problems:
        shown = "; ".join(problems[:12]) + (f"; and {len(problems) - 12} more" if len(problems) > 12 else "")
        raise CheckpointError(f"{path}: weights do not match the model: {shown}")
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: refused: non-finite weights (NaN or inf) in {', '.join(bad)}")
    return config, tokenizer


def check_train_state(payload: dict, path: str | os.PathLike = "checkpoint") -> None:
    """Refuse a checkpoint whose training state ``--resume`` could not use: the numbers it counts
    with, the random-number states, the carried hidden state and the optimizer's record."""
    state = payload.get("train_state")
    if not isinstance(state, dict) or not isinstance(payload.get("optimizer"), dict):
        raise CheckpointError(f"{path}: holds no training state, so it cannot be resumed")
    problems = []
    for name in ("step", "epoch", "tokens") + (("window",) if state.get("window") is not None else ()):
        if type(state.get(name)) is not int or state[name] < 0:
            problems.append(f"{name} is {_shown(state.get(name))}, not a whole number >= 0")
    for name in ("elapsed", "best_val_loss"):
        if type(state.get(name)) not in (int, float) or math.isnan(state[name]):
            problems.append(f"{name} is {_shown(state.get(name))}, not a number")
    world = state.get("world_size", 1)
    if type(world) is not int or world < 1:
        problems.append(f"world_size is {_shown(world)}, not a whole number >= 1")
    else:
        rngs = state.get("torch_rng_by_rank", [state.get("torch_rng")])
        hiddens = state.get("hidden_by_rank", [state.get("hidden")])
        if not isinstance(rngs, (list, tuple)) or len(rngs) != world:
            problems.append(f"torch_rng_by_rank does not hold {world} states")
        elif not all(isinstance(r, torch.Tensor) and r.dtype == torch.uint8 and r.dim() == 1 for r in rngs):
            problems.append("a random-number state is not a byte tensor")
        if not isinstance(hiddens, (list, tuple)) or len(hiddens) != world:
            problems.append(f"hidden_by_rank does not hold {world} states")
        elif not all(
            h is None or (isinstance(h, (list, tuple)) and all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in h))
            for h in hiddens
        ):
            problems.append("a carried hidden state is not a list of floating-point tensors")
    metrics = payload.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        problems.append("metrics is not a list of records")
    elif metrics and not isinstance(metrics[-1].get("val_loss"), (int, float)):
        problems.append("the last metrics record has no val_loss")
    train_config = payload.get("train_config")
    if not isinstance(train_config, dict):
        problems.append("train_config is not a record")
    else:
        try:
            TrainConfig.from_dict(train_config)
        except Exception as e:  # a value of the wrong type fails its own check: unusable either way
            problems.append(f"train_config is invalid ({str(e)[:200]})")
    corpus = payload.get("corpus")
    if not isinstance(corpus, dict) or not isinstance(corpus.get("sha256"), str):
        problems.append("the record of its text (corpus) has no sha256")
    elif "files" in corpus and not (
        isinstance(corpus["files"], list)
        and all(isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256"), str) for f in corpus["files"])
    ):
        problems.append("the record of its files is not a list of paths with their sha256")
    optimizer = payload["optimizer"]
    if not isinstance(optimizer.get("state"), dict) or not isinstance(optimizer.get("param_groups"), list):
        problems.append("the optimizer record has no state and param_groups")
    if problems:
        raise CheckpointError(f"{path}: refused: its training state is invalid: {'; '.join(problems)}")


def model_from_checkpoint(payload: dict, device: str | torch.device = "cpu", path: str = "checkpoint"):
    """Rebuild the model and tokenizer (``check_model`` first: nothing unchecked is built)."""
    config, tokenizer = check_model(payload, path)
    model = LanguageModel(config)
    model.load_state_dict(payload["model"])
    return model.to(device), tokenizer
