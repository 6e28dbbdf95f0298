"""What every export starts from: the checked model, its tokenizer and the facts a model card
shows, read through the one loader (``charlstm.runs.checkpoint``), and the rule for the output
path (never replaced without ``--force``)."""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from pathlib import Path

from charlstm.errors import CharlstmError
from charlstm.runs.checkpoint import find_checkpoint, load_model


@dataclass
class ExportSource:
    """A loaded model and what is known about it."""

    path: Path  # the checkpoint file or exported folder it was read from
    model: object  # charlstm.model.LanguageModel, in eval mode, on the CPU
    tokenizer: object
    val_loss: float | None  # the best validation loss recorded (nats per token)
    bptt: int | None  # the window length it was trained with
    trained_on: str  # the corpus's name
    date: str  # when the checkpoint was written (UTC, ISO 8601)

    @property
    def config(self):
        return self.model.config

    def card(self) -> dict:
        """The model card: what the exported files say about the model."""
        from charlstm.model import count_parameters

        return {
            "trained_on": self.trained_on,
            "parameters": count_parameters(self.config),
            "val_loss": self.val_loss,
            "bptt": self.bptt,
            "date": self.date,
            "source": self.path.name if self.path.is_file() else self.path.name + "/",
        }


def load_source(run: str | os.PathLike) -> ExportSource:
    """The model at ``run`` (a run directory: its best checkpoint; a checkpoint file; an exported
    folder), checked as every loader checks it."""
    path = find_checkpoint(run)
    model, tokenizer, payload = load_model(path, "cpu")
    model.eval()
    losses = [m.get("val_loss") for m in payload.get("metrics") or [] if isinstance(m, dict)]
    losses = [v for v in losses if type(v) in (int, float) and math.isfinite(v)]
    state = payload.get("train_state")
    best = state.get("best_val_loss") if isinstance(state, dict) else None
    val_loss = best if type(best) in (int, float) and math.isfinite(best) else None
    if val_loss is None and losses:
        val_loss = min(losses)
    train_config = payload.get("train_config")
    bptt = train_config.get("bptt") if isinstance(train_config, dict) else None
    corpus = payload.get("corpus")
    trained_on = str(corpus.get("name", "?")) if isinstance(corpus, dict) else "?"
    if "/" in trained_on or os.sep in trained_on:
        trained_on = os.path.basename(trained_on.rstrip("/" + os.sep)) or trained_on  # not the sharer's folders
    stamp = (path / "config.json" if path.is_dir() else path).stat().st_mtime
    date = datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ExportSource(
        path=path,
        model=model,
        tokenizer=tokenizer,
        val_loss=float(val_loss) if val_loss is not None else None,
        bptt=bptt if type(bptt) is int else None,
        trained_on=trained_on[:500],
        date=date,
    )


def check_out(out: str | os.PathLike, force: bool, folder: bool = False) -> Path:
    """``out`` once it may be written: it must not exist unless ``force``, and must be a folder
    (``folder``) or a file as the format needs; its parent must exist."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not force:
            raise CharlstmError(f"{out}: already exists; pass --force to replace it")  # as every command says
        if folder and not out.is_dir():
            raise CharlstmError(f"{out}: is a file, and this format writes a folder; choose another --out")
        if not folder and out.is_dir():
            raise CharlstmError(f"{out}: is a folder, and this format writes one file; choose another --out")
    if not out.parent.is_dir():
        raise CharlstmError(f"{out.parent}: no such folder; create it first or choose another --out")
    return out
