"""Where a run lives: its directory (never one that holds another run), its memory-mapped token
file, its JSON files, finding the text it was trained on again, and planning a resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charlstm.atomic import atomic_write, cleanup_temp_files, write_error
from charlstm.data.batches import encode_to_file, held_out_text, open_tokens
from charlstm.runs.checkpoint import BEST, LAST, find_checkpoint, load_checkpoint
from charlstm.runs.checks import check_model, check_train_state
from charlstm.config import FIXED_ON_RESUME, ModelShape, TrainConfig, differences
from charlstm.data.corpus import Corpus
from charlstm.distributed import world_size_from_environment
from charlstm.errors import (
    CharlstmError,
    CheckpointError,
    ConfigError,
    DataError,
    RunDirectoryError,
    RunLockedError,
)
from charlstm.runs.lock import RunLock
from charlstm.data.source import Source
from charlstm.data.text import TextSource, TextStats
from charlstm.data.tokenizers import Tokenizer, id_dtype, tokenizer_from_dict

CONFIG, METRICS, SAMPLES = "config.json", "metrics.jsonl", "samples.txt"
RUN_FILES = (CONFIG, METRICS, BEST, LAST)
TOKENS, TOKENS_META = "tokens.bin", "tokens.json"  # the memory-mapped token file of a run


def holds_run(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).exists() for name in RUN_FILES)


def prepare_run_dir(
    out: str | os.PathLike | None,
    stem: str,
    root: str | os.PathLike = "checkpoints",
    lock: RunLock | None = None,
) -> tuple[Path, Path | None]:
    """The run directory to write to, and the outermost directory created for it (or None);
    never a directory that already holds a run.

    An explicit ``--out`` that holds a run is refused. The default ``checkpoints/<stem>`` moves on
    to ``<stem>-2``, ``<stem>-3``, ... so a second run never overwrites the first. With ``lock``,
    the directory is locked (``charlstm.runs.lock``) before anything is written in it: an ``--out``
    another process is training is refused, and the default moves on past it.
    """
    taken: set[Path] = set()  # default directories another new run locked a moment ago
    while True:
        if out is not None:
            run_dir = Path(out)
            if run_dir.exists() and not run_dir.is_dir():
                raise RunDirectoryError(f"--out {run_dir}: exists and is not a directory")
            if holds_run(run_dir):
                raise RunDirectoryError(
                    f"--out {run_dir}: already holds a run; choose another --out or move that run away"
                )
        else:
            run_dir, n = Path(root) / stem, 2
            while holds_run(run_dir) or run_dir in taken:
                run_dir = Path(root) / f"{stem}-{n}"
                n += 1
        created = _make_dir(run_dir)
        if lock is None:
            break
        try:
            lock.acquire(run_dir)
        except RunLockedError:
            if out is not None:
                raise
            taken.add(run_dir)
            continue
        except BaseException:
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            raise
        if not holds_run(run_dir):
            break
        lock.release()  # a run that ended between the check and the lock: look again
    cleanup_temp_files(run_dir)
    return run_dir, created


def _make_dir(run_dir: Path) -> Path | None:
    """Create ``run_dir``; the outermost directory created (removing it undoes everything), or None."""
    created = None
    for directory in [run_dir, *run_dir.parents]:
        if directory.exists():
            break
        created = directory
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirectoryError(f"{run_dir}: cannot create the run directory ({e.strerror})") from None
    return created


def write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


class RunRecord:
    """A run's ``config.json``: its settings, text, command line, and a status that says what it
    is doing. ``running`` while a process trains (its pid and host say which), then
    ``finished: <why it stopped>`` or ``failed: <message>`` (``charlstm.runs.info.run_status``
    reads it)."""

    def __init__(self, run_dir: Path, fields: dict):
        self.path = Path(run_dir) / CONFIG
        self.record = dict(fields, status="running", pid=os.getpid(), host=socket.gethostname(), started=time.time())
        write_json(self.path, self.record)

    def end(self, status: str) -> None:
        self.record.update(status=status, ended=time.time())
        try:
            write_json(self.path, self.record)
        except CharlstmError:
            pass  # a full disk: the error being raised says so already


def recorded_commands(run_dir: Path) -> tuple[list[str] | None, list[dict]]:
    """The command line that started the run in ``run_dir`` and its resumes (``{"command",
    "step"}`` each), from its ``config.json``; a resumed run keeps them all. A file written
    before resumes were recorded has only the latest command, taken as the first."""
    try:
        record = json.loads((Path(run_dir) / CONFIG).read_text())
    except (OSError, ValueError):
        return None, []
    if not isinstance(record, dict):
        return None, []
    command = record.get("command")
    resumes = record.get("resumes")
    command = command if isinstance(command, list) and all(isinstance(a, str) for a in command) else None
    resumes = [r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else []
    return command, resumes


def write_metrics(run_dir: Path, records: list[dict]) -> None:
    """``metrics.jsonl`` as exactly ``records`` (a resumed run drops those newer than its checkpoint)."""
    atomic_write(run_dir / METRICS, "".join(json.dumps(record) + "\n" for record in records))


def append_metrics(run_dir: Path, record: dict) -> None:
    try:
        with open(run_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise write_error(run_dir / METRICS, e) from e


# ---------------------------------------------------------------------------------- the token file


@dataclass
class TokenFile:
    """A run's text as token ids (memory-mapped), what the text held, and where the ids came from."""

    ids: np.ndarray
    stats: TextStats
    how: str  # "wrote PATH" or "reused PATH"
    val_start: int | None = None  # where a corpus's validation files begin
    unknown: int = 0  # ids that are the unknown symbol (counted when the file is written)


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    record = tokenizer.to_dict()
    return hashlib.sha256(repr(sorted(record.items())).encode()).hexdigest()


def token_file(
    run_dir: Path,
    source: Source,
    tokenizer: Tokenizer,
    *,
    expected_sha256: str | None = None,
    private: str | None = None,
) -> TokenFile:
    """The text's ids, memory-mapped from the run's token file (``tokens.bin``).

    With ``expected_sha256`` (a resumed run, or another torchrun rank), the file is reused when
    the text and tokenizer are those it was made from, and a text that has changed is refused.
    ``private`` (a prefix): when the run's file cannot be used, encode into a new temporary
    directory instead of the run directory (a rank on another machine).
    """
    dtype = id_dtype(tokenizer.vocab_size)
    path, meta_path = run_dir / TOKENS, run_dir / TOKENS_META
    text_sha256 = source.sha256() if expected_sha256 or private else None  # one read of the file
    expected_sha256 = expected_sha256 or text_sha256
    key = {
        "text_sha256": text_sha256,
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "encoding_errors": source.encoding_errors,
        "dtype": dtype.str,
    }
    if expected_sha256 and key["text_sha256"] != expected_sha256:
        raise DataError(
            f"{source.name}: this text has changed since the run started (its SHA-256 differs), "
            "so resuming would not continue the same data; start a new run on it instead"
        )
    if expected_sha256:
        try:
            meta = json.loads(meta_path.read_text())
            if (
                all(meta.get(k) == v for k, v in key.items())
                and path.stat().st_size == meta["count"] * dtype.itemsize
            ):
                stats = TextStats(meta["chars"], meta["bytes"], meta["replacements"], meta["sha256"])
                ids = open_tokens(path, dtype, meta["count"])
                return TokenFile(ids, stats, f"reused {path}", meta.get("val_start"), meta.get("unknown", 0))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no usable file: encode again
    if private:
        path = Path(tempfile.mkdtemp(prefix=private)) / TOKENS
    encoded = encode_to_file(source, tokenizer, path)
    if not private:
        stats = encoded.stats.to_dict()
        extra = {"unknown": encoded.unknown}
        if encoded.val_start is not None:
            extra["val_start"] = encoded.val_start
        write_json(meta_path, dict(key, text_sha256=stats["sha256"], count=len(encoded.ids), **stats, **extra))
    return TokenFile(encoded.ids, encoded.stats, f"wrote {path}", encoded.val_start, encoded.unknown)


def validation_text(run_dir: Path) -> str:
    """The held-out text a run validated on, from its token file (the same split whatever the
    tokenizer: the last ``--val-fraction`` of the tokens)."""
    payload = load_checkpoint(run_dir)
    tokenizer = tokenizer_from_dict(payload["tokenizer"])
    meta = json.loads((run_dir / TOKENS_META).read_text())
    ids = open_tokens(run_dir / TOKENS, id_dtype(tokenizer.vocab_size), meta["count"])
    return held_out_text(ids, payload["train_config"]["val_fraction"], tokenizer, meta.get("val_start"))


# ------------------------------------------------------------------------- the text, found again


def source_of(corpus: dict, encoding_errors: str) -> Source:
    """The text a run was trained on, from its checkpoint's record (``Source.record``)."""
    if corpus.get("builtin"):
        return TextSource.builtin()
    if "separator" in corpus:  # a corpus of several files
        missing = [f for f in corpus["files"] if not Path(f["path"]).is_file()]
        if missing:
            raise DataError(
                f"the run was trained on {missing[0]['name']}, which is no longer at {missing[0]['path']}; "
                "give the files: charlstm train FILE... --resume RUN"
            )
        val = set(corpus.get("val_files", []))
        paths = [f["path"] for f in corpus["files"]]
        source = Corpus(
            [p for p in paths if p not in val],
            separator=corpus["separator"],
            val_files=[p for p in paths if p in val],
            encoding_errors=encoding_errors,
            stem=corpus.get("stem"),
            skipped=corpus.get("skipped", ()),
        )
        source.check_unchanged(corpus)
        return source
    path = corpus.get("path")
    if not path or not Path(path).is_file():
        where = f"which is no longer at {path}" if path else "which was not a file"
        raise DataError(
            f"the run was trained on {corpus.get('name')}, {where}; give the text: "
            "charlstm train FILE --resume RUN"
        )
    return TextSource.from_file(path, encoding_errors)


# ------------------------------------------------------------------------------------- resuming


@dataclass
class ResumePlan:
    """A checked request to continue a run: its checkpoint and the settings it goes on with."""

    run_dir: Path
    payload: dict  # the loaded LAST checkpoint
    config: TrainConfig
    shape: ModelShape
    source: Source


def plan_resume(
    run: str | os.PathLike,
    source: Source | None = None,
    *,
    changes: dict | None = None,
    lock: RunLock | None = None,
) -> ResumePlan:
    """Check that ``run`` (a run directory, or one of its checkpoint files) can continue with the
    settings the user gave now (``changes``: ``TrainConfig``/``ModelShape`` field names).

    Settings that fix the model's shape, the tokens or the data order must match the run; every
    difference is listed. ``source`` defaults to the text the run was trained on. ``lock``: taken
    on the run directory before anything in it is written (another process training the run is
    named and refused).
    """
    changes = dict(changes or {})
    path = Path(run)
    if not path.exists():
        raise RunDirectoryError(f"--resume {run}: no such run directory")
    try:
        checkpoint = find_checkpoint(path, prefer=(LAST,))
    except CheckpointError:
        raise RunDirectoryError(
            f"--resume {run}: no {LAST} in this directory, so there is nothing to resume "
            "(is it a charlstm run directory?)"
        ) from None
    run_dir = checkpoint.parent
    if lock is not None:
        lock.acquire(run_dir)
    cleanup_temp_files(run_dir)  # what an interrupted save left is never a checkpoint
    payload = load_checkpoint(checkpoint)
    check_train_state(payload, checkpoint)
    check_model(payload, checkpoint)  # the weights fit the config before any model is built

    saved = {**payload["model_config"], **payload["train_config"]}
    changed = differences(changes, saved, FIXED_ON_RESUME, "run")
    if changed:
        raise ConfigError(
            f"cannot resume {run_dir} with changed settings: {'; '.join(changed)}. These fix the "
            "model, its tokens or the order of the data; leave them out, or start a new run"
        )
    shape = ModelShape.from_dict({**payload["model_config"], **changes})
    config = TrainConfig.from_dict({**payload["train_config"], **changes})

    state = payload["train_state"]
    done = (
        f"--epochs {config.epoch_limit}"
        if config.epoch_limit is not None and state["epoch"] >= config.epoch_limit
        else f"--max-steps {config.max_steps}"
        if config.max_steps is not None and state["step"] >= config.max_steps
        else f"--max-time {config.max_time:g}"
        if config.max_time is not None and state["elapsed"] >= config.max_time
        else None
    )
    if done:
        raise RunDirectoryError(
            f"--resume {run_dir}: the run already reached {done} (step {state['step']}, epoch "
            f"{state['epoch']}); raise --epochs, --max-steps or --max-time to train further"
        )
    saved_world = state.get("world_size", 1)
    world = world_size_from_environment()
    if saved_world != world:
        raise ConfigError(
            f"cannot resume {run_dir} with {world} process(es): it was trained with {saved_world}, and "
            "the processes' shares of the text and their carried states depend on that number; "
            + ("run it without torchrun" if saved_world == 1 else f"use torchrun --nproc-per-node {saved_world}")
            + " (a checkpoint loads for sample and eval in a single process either way)"
        )
    if source is None:
        source = source_of(payload["corpus"], config.encoding_errors)
    else:
        # The text given again is read as the run read it: --encoding-errors cannot change.
        source.adopt(payload["corpus"], config.encoding_errors)
    return ResumePlan(run_dir, payload, config, shape, source)
