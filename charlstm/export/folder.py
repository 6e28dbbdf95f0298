"""``charlstm export --format safetensors``: a folder with ``model.safetensors``, ``config.json``
and (SentencePiece tokenizers) ``tokenizer.model``, the layout people know from Hugging Face.
``charlstm.runs.folder`` reads it back, through the same checks as a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from charlstm.atomic import atomic_write
from charlstm.export.source import ExportSource
from charlstm.runs.folder import (
    CONFIG_FILE,
    FOLDER_FORMAT,
    FOLDER_VERSION,
    SENTENCEPIECE_FILE,
    WEIGHTS_FILE,
    config_sha256,
    file_sha256,
)
from charlstm.errors import WriteError


def folder_state(model) -> dict:
    """The weights to store: contiguous CPU tensors, a tied projection once (safetensors refuses
    two names for one storage; the reader gives ``head.weight`` back as ``embedding.weight``)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        del state["head.weight"]
    return state


def write_folder(source: ExportSource, out: Path) -> list[Path]:
    """Write the folder (created if needed; the files in it replaced one by one, atomically,
    config.json last, so a half-written export never loads). Returns the files written."""
    from safetensors.torch import save as save_safetensors

    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise WriteError(f"{out}: cannot create the folder ({e.strerror or e})") from None
    record = source.tokenizer.to_dict()
    files: dict[str, str] = {}
    written = []
    weights = save_safetensors(folder_state(source.model), metadata={"format": FOLDER_FORMAT})
    written.append(atomic_write(out / WEIGHTS_FILE, weights))
    files[WEIGHTS_FILE] = file_sha256(weights)
    if "model_proto" in record:
        proto = bytes(record.pop("model_proto"))
        record["file"] = SENTENCEPIECE_FILE
        written.append(atomic_write(out / SENTENCEPIECE_FILE, proto))
        files[SENTENCEPIECE_FILE] = file_sha256(proto)
    else:
        (out / SENTENCEPIECE_FILE).unlink(missing_ok=True)  # a stale one from an earlier export
    config = {
        "format": FOLDER_FORMAT,
        "format_version": FOLDER_VERSION,
        "model_type": "charlstm",
        "model_config": source.config.to_dict(),
        "tokenizer": record,
        **source.card(),
        "files": files,
    }
    config["config_sha256"] = config_sha256(config)
    written.append(atomic_write(out / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False) + "\n"))
    return written
