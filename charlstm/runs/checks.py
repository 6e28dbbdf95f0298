"""The checks on a checkpoint's contents, which may come from someone else: nothing in it is
trusted before it is checked.

``check_model_config`` checks the model config's types and sizes, and the parameters it implies
against ``MAX_PARAMETERS`` and the file's size; ``check_model`` checks the tokenizer record and
every weight's dtype, shape and values before a model is built; ``check_train_state`` checks what
``--resume`` would use. ``charlstm.runs.checkpoint`` (the format: saving, finding, loading) calls
them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch

from charlstm.config import CELLS, ModelConfig, TrainConfig
from charlstm.data.tokenizers import Tokenizer, tokenizer_from_dict
from charlstm.errors import CheckpointError
from charlstm.model import count_parameters, weight_shapes
from charlstm.runs.digest import UnsupportedData, check_tensor

# Limits on what a checkpoint's model config may ask for: far above anything charlstm trains, far
# below what would exhaust memory before the weights could be checked.
MAX_SIZES = {"vocab_size": 1 << 24, "embedding_dim": 1 << 16, "hidden_size": 1 << 16, "num_layers": 256}
MAX_PARAMETERS = 2_000_000_000
# Every weight is in the file, at 2 bytes (fp16) or more each: a config implying more parameters
# than the file has bytes (plus some slack) cannot be the file's own.
PARAMETER_SLACK = 1 << 20
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
    expected = weight_shapes(config)
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
