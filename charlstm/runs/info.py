"""What a run directory says about its run, read while it trains, after it finished, or after it
was killed: ``charlstm info`` and ``charlstm plot`` read it.

Only whole files are read: ``config.json`` is written atomically, and a line of
``metrics.jsonl`` or a block of ``samples.txt`` still being written is left out. No checkpoint is
loaded.

A run's status comes from ``config.json``, which training writes at its start (``"running"``,
with the process id and host) and at its end (``"finished: <why it stopped>"``, or
``"failed: <the error>"``):

- ``finished: ...`` / ``failed: ...``: as recorded;
- ``running``: the recorded process is alive on this machine;
- ``killed``: the record says running, but no such process is alive on this machine (killed,
  or the machine went down): ``charlstm train --resume RUN`` goes on from ``last.pt``;
- ``running?``: the record says running on another machine, which this one cannot check;
- ``unknown``: a run written before charlstm recorded a status.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from charlstm.errors import RunDirectoryError
from charlstm.runs.directory import CONFIG, METRICS, SAMPLES


@dataclass
class RunSummary:
    name: str
    path: str
    status: str
    command: str | None = None  # the command that started the run, quoted to copy and paste
    resumes: list[dict] = field(default_factory=list)  # {"command": str or None, "step": int} each
    num_parameters: int | None = None
    model: str | None = None  # "lstm 2x256"
    tokenizer: str | None = None  # "char (104)"
    data: str | None = None
    steps: int | None = None
    time: float | None = None  # seconds of training at the last evaluation
    best_val_loss: float | None = None  # nats per token
    best_bits_per_char: float | None = None
    last_sample: str | None = None
    init_from: str | None = None
    metrics: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        record = asdict(self)
        del record["metrics"]
        return record


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's evaluation records; a last line still being written is left out."""
    try:
        lines = (run_dir / METRICS).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            break
        numbers = ("step", "time", "val_loss")
        if isinstance(record, dict) and all(isinstance(record.get(k), (int, float)) for k in numbers):
            records.append(record)  # a line of another shape is not a record of this run: skipped
    return records


def last_sample(run_dir: Path) -> str | None:
    """The last whole sample in ``samples.txt`` (each block ends with a blank line)."""
    try:
        text = (run_dir / SAMPLES).read_text(encoding="utf-8", errors="replace")  # may be mid-write
    except OSError:
        return None
    blocks = [b for b in text.split("\n--- step ") if b]
    if not blocks or not text.endswith("\n\n"):
        blocks = blocks[:-1]  # the last one is still being written
    if not blocks:
        return None
    body = blocks[-1].split("\n", 1)[1] if "\n" in blocks[-1] else ""
    return body[:-2] if body.endswith("\n\n") else body.rstrip("\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a pid reused by another program is not the run
        try:
            return b"charlstm" in cmdline.read_bytes() or b"python" in cmdline.read_bytes()
        except OSError:
            return True
    return True


def run_status(record: dict) -> str:
    """The status of a run from its ``config.json`` record (see the module's rules)."""
    status = record.get("status")
    if status is None:
        return "unknown"
    if status != "running":
        return status
    if record.get("host") != socket.gethostname():
        return "running?"
    pid = record.get("pid")
    return "running" if isinstance(pid, int) and _alive(pid) else "killed"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _joined(command) -> str | None:
    """A recorded command line (a list of arguments) as a shell would take it back: ``shlex.join``,
    so a quoted pattern keeps its quotes."""
    if isinstance(command, list) and all(isinstance(a, str) for a in command):
        return shlex.join(command)
    return None


def read_run(path: str | os.PathLike) -> RunSummary:
    """A summary of the run in ``path`` (a run directory)."""
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"{path}: no such run directory")
    try:
        record = json.loads((run_dir / CONFIG).read_text())
    except OSError:
        raise RunDirectoryError(f"{path}: no {CONFIG} here; is it a charlstm run directory?") from None
    except ValueError:
        raise RunDirectoryError(f"{path}: {CONFIG} is not valid JSON") from None
    if not isinstance(record, dict):
        raise RunDirectoryError(f"{path}: {CONFIG} does not describe a charlstm run")
    info, model, corpus = (_dict(record.get(key)) for key in ("info", "model", "corpus"))
    metrics = read_metrics(run_dir)
    summary = RunSummary(name=run_dir.name, path=str(run_dir), status=run_status(record), metrics=metrics)
    command = record.get("command")
    summary.command = _joined(command)
    for resume in record.get("resumes") or []:
        if isinstance(resume, dict):
            summary.resumes.append({"command": _joined(resume.get("command")), "step": resume.get("step")})
    summary.num_parameters = info.get("num_parameters")
    if model:
        summary.model = f"{model.get('cell', 'lstm')} {model.get('num_layers')}x{model.get('hidden_size')}"
    if info.get("tokenizer"):
        summary.tokenizer = f"{info['tokenizer']} ({info.get('vocab_size', '?')})"
    summary.data = corpus.get("name")
    if record.get("init_from"):
        summary.init_from = record["init_from"].get("path")
    if metrics:
        summary.steps = metrics[-1]["step"]
        summary.time = metrics[-1]["time"]
        losses = [m["val_loss"] for m in metrics if m.get("val_loss") is not None and math.isfinite(m["val_loss"])]
        if losses:
            summary.best_val_loss = min(losses)
            # Per character: tokens per character of the whole text (exact for a char model).
            tokens = (info.get("train_tokens") or 0) + (info.get("val_tokens") or 0)
            chars = corpus.get("chars") or tokens
            summary.best_bits_per_char = summary.best_val_loss * (tokens / chars if chars else 1) / math.log(2)
    summary.last_sample = last_sample(run_dir)
    return summary
