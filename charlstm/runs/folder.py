"""Reading an exported model folder (``charlstm export --format safetensors``) back safely.

The folder is the layout people know from Hugging Face:

    model.safetensors   the weights (a tied projection is stored once, as ``embedding.weight``)
    config.json         format, format_version, model_config, the tokenizer record, val_loss,
                        bptt, what it was trained on, the sha256 of every other file and of
                        its own content (``config_sha256``)
    tokenizer.model     the SentencePiece model (bpe and unigram tokenizers only)

``load_folder`` turns it into the same payload a checkpoint loads to (``model_config``,
``tokenizer``, ``model``, ``metrics``, ``train_config``, ``corpus``), so everything that reads a
checkpoint (``sample``, ``eval``, ``chat``, ``charlstm.load``) reads a folder unchanged, through
the same checks (``check_model``): nothing in the folder is trusted before it is checked. The
file names are fixed here, never taken from config.json.

The writer is ``charlstm.export.folder`` (the loader sits on a lower floor than export).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

from charlstm.errors import CheckpointError
from charlstm.runs.checks import check_model_config

FOLDER_FORMAT = "charlstm-safetensors"
FOLDER_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SENTENCEPIECE_FILE = "tokenizer.model"
# Far above what a real config.json or SentencePiece model needs; far below what would hurt.
MAX_CONFIG_BYTES = 16 << 20
MAX_SENTENCEPIECE_BYTES = 64 << 20


def is_model_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding an exported model's weights."""
    path = Path(path)
    return path.is_dir() and (path / WEIGHTS_FILE).is_file()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(path: Path, limit: int, folder: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise CheckpointError(
                f"{folder}: refused: {path.name} is {size:,} bytes, more than the limit of {limit:,}"
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: not a complete exported model (no {path.name})") from None
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot read {path.name} ({e.strerror or e})") from None


def read_folder_config(folder: str | os.PathLike) -> dict:
    """The folder's config.json, once it is a JSON object of the format and a version this
    charlstm reads."""
    folder = Path(folder)
    data = _read(folder / CONFIG_FILE, MAX_CONFIG_BYTES, folder)
    try:
        config = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{folder}: {CONFIG_FILE} is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(config, dict) or config.get("format") != FOLDER_FORMAT:
        raise CheckpointError(
            f"{folder}: {CONFIG_FILE} is not a charlstm export (format is not {FOLDER_FORMAT!r})"
        )
    version = config.get("format_version")
    if type(version) is not int or not 1 <= version <= FOLDER_VERSION:
        raise CheckpointError(
            f"{folder}: export format version {str(version)[:40]} is newer than this charlstm reads "
            f"(version {FOLDER_VERSION}); upgrade charlstm"
        )
    if config.get("config_sha256") != config_sha256(config):
        raise CheckpointError(
            f"{folder}: checksum mismatch: {CONFIG_FILE} is corrupt or was changed after export; export it again"
        )
    return config


def config_sha256(config: dict) -> str:
    """The checksum of config.json's content, itself left out (stored in it as ``config_sha256``)."""
    rest = {k: v for k, v in config.items() if k != "config_sha256"}
    return file_sha256(json.dumps(rest, sort_keys=True, ensure_ascii=True).encode("ascii"))


def load_folder(folder: str | os.PathLike) -> dict:
    """Load and check an exported folder: a checkpoint-shaped payload (see the module docstring).
    Every file's checksum must match config.json's record of it; the model config is checked
    against the weights file's size; ``check_model`` checks the rest when the model is built."""
    from safetensors import SafetensorError
    from safetensors.torch import load as load_safetensors

    folder = Path(folder)
    config = read_folder_config(folder)
    checksums = config.get("files")
    if not isinstance(checksums, dict) or not isinstance(checksums.get(WEIGHTS_FILE), str):
        raise CheckpointError(f"{folder}: {CONFIG_FILE} has no checksum of {WEIGHTS_FILE} (files)")
    record = config.get("tokenizer")
    if not isinstance(record, dict):
        raise CheckpointError(f"{folder}: refused: {CONFIG_FILE}'s tokenizer record is not an object")
    tokenizer = dict(record)
    if tokenizer.get("kind") in ("bpe", "unigram"):
        proto = _read(folder / SENTENCEPIECE_FILE, MAX_SENTENCEPIECE_BYTES, folder)
        _check_sum(folder, SENTENCEPIECE_FILE, proto, checksums.get(SENTENCEPIECE_FILE))
        tokenizer["model_proto"] = proto
        tokenizer.pop("file", None)
    weights_path = folder / WEIGHTS_FILE
    model_config = check_model_config(config.get("model_config"), folder, weights_path.stat().st_size)
    data = _read(weights_path, weights_path.stat().st_size, folder)
    _check_sum(folder, WEIGHTS_FILE, data, checksums[WEIGHTS_FILE])
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(
            f"{folder}: cannot read {WEIGHTS_FILE} (corrupt or not safetensors: {first})"
        ) from None
    if model_config.tie_weights and "head.weight" not in state and "embedding.weight" in state:
        state["head.weight"] = state["embedding.weight"]  # stored once: one matrix, two uses
    payload = {
        "format": FOLDER_FORMAT,
        "format_version": config["format_version"],
        "model_config": config["model_config"],
        "tokenizer": tokenizer,
        "model": state,
        "corpus": {"name": str(config.get("trained_on", "?"))[:500]},
        "metrics": [],
    }
    val_loss = config.get("val_loss")
    if type(val_loss) in (int, float) and math.isfinite(val_loss):
        payload["metrics"] = [{"val_loss": float(val_loss)}]
    bptt = config.get("bptt")
    if type(bptt) is int and 1 <= bptt <= 1 << 20:
        payload["train_config"] = {"bptt": bptt}
    return payload


def _check_sum(folder: Path, name: str, data: bytes, expected) -> None:
    if not isinstance(expected, str) or file_sha256(data) != expected:
        raise CheckpointError(
            f"{folder}: checksum mismatch: {name} is corrupt or was changed after export; export it again"
        )
