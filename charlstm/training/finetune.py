"""Fine-tuning: a new run that starts from another model's weights and tokenizer.

``charlstm train new.txt --init-from RUN_OR_CHECKPOINT`` takes the model (its best checkpoint,
else its last) as it is: the same shape, the same tokenizer (never a vocabulary rebuilt from the
new text), its weights. The optimizer (a fresh AdamW), the schedule, the step count and the data
are new. A char model meeting characters it never saw trains them as its unknown symbol, or,
with ``--strict-vocab``, refuses the text.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from charlstm.runs.checkpoint import find_checkpoint, load_model
from charlstm.config import ModelShape, differences
from charlstm.errors import ConfigError, DataError
from charlstm.data.text import file_sha256
from charlstm.data.tokenizers import CharTokenizer, Tokenizer

# The settings that come from the model started from; a different value is refused.
FROM_THE_MODEL = (
    "embedding_dim", "hidden_size", "num_layers", "cell", "tie_weights", "tokenizer", "vocab_size"
)
SHOWN_UNKNOWN = 20  # characters named in the message about unknown ones


@dataclass
class InitFrom:
    """A checked request to start from a model: where it is, what it is, and its weights."""

    checkpoint: Path
    payload: dict
    tokenizer: Tokenizer
    shape: ModelShape  # the model's shape, with the --dropout given now
    train_settings: dict  # tokenizer and vocab_size, as the model has them
    strict_vocab: bool
    record: dict  # what the new run records: path, sha256 and step of the checkpoint

    @property
    def state_dict(self) -> dict:
        return self.payload["model"]


def plan_init(source: str | os.PathLike, changes: dict, *, strict_vocab: bool = False) -> InitFrom:
    """Check that a new run can start from ``source`` (a run directory or checkpoint file) with
    the settings given now (``changes``: field names); every conflicting setting is listed."""
    checkpoint = find_checkpoint(source)
    model, tokenizer, payload = load_model(checkpoint, "cpu")  # refuses bad weights
    saved = {**payload["model_config"], **payload.get("train_config", {})}
    saved.setdefault("tokenizer", tokenizer.kind)
    conflicts = differences(changes, saved, FROM_THE_MODEL, "model")
    if conflicts:
        raise ConfigError(
            f"--init-from {source}: the model's shape and tokens come from it, and these settings differ: "
            f"{'; '.join(conflicts)}. Leave them out, or train a new model without --init-from"
        )
    shape = ModelShape.from_dict({**model.config.to_dict(), **{k: v for k, v in changes.items() if k == "dropout"}})
    train_state = payload.get("train_state") or {}
    return InitFrom(
        checkpoint=checkpoint,
        payload=payload,
        tokenizer=tokenizer,
        shape=shape,
        train_settings={
            "tokenizer": tokenizer.kind,
            "vocab_size": saved.get("vocab_size") if tokenizer.kind in ("bpe", "unigram") else None,
        },
        strict_vocab=strict_vocab,
        record={
            "path": str(checkpoint.resolve()),
            "sha256": file_sha256(checkpoint),
            "step": train_state.get("step"),
        },
    )


def unknown_characters(init: InitFrom, chunks, name: str = "the text") -> list[str]:
    """The characters of the text (``chunks``, read once) that a char model's vocabulary lacks
    (none for byte and SentencePiece models). With ``--strict-vocab``, any is an error."""
    if init.tokenizer.kind != "char":
        for _ in chunks:  # still one pass, which checks every byte before anything is written
            pass
        return []
    seen = CharTokenizer.train(chunks).chars
    known = set(init.tokenizer.chars)
    unknown = [c for c in seen if c not in known]
    if unknown and init.strict_vocab:
        raise DataError(
            f"{name}: {describe_unknown(unknown)} of the text are not in the vocabulary of {init.checkpoint}, and "
            "--strict-vocab refuses them; leave out --strict-vocab to train them as the unknown symbol, or "
            "for a text in new scripts train a new model with --tokenizer byte or --tokenizer bpe"
        )
    return unknown


def describe_unknown(unknown: list[str]) -> str:
    shown = ", ".join(repr(c) for c in unknown[:SHOWN_UNKNOWN]) + (", ..." if len(unknown) > SHOWN_UNKNOWN else "")
    return f"{len(unknown)} character{'s' if len(unknown) != 1 else ''} ({shown})"
