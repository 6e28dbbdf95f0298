"""Where a run lives: its directory (never one that holds another run), its memory-mapped token
file, its JSON files, and the record of the text it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from charlstm.checkpoint import BEST, LAST, cleanup_temp_files
from charlstm.corpus import BUILTIN_NAME, TextSource, encode_to_file, open_tokens, token_dtype
from charlstm.errors import DataError, RunDirectoryError
from charlstm.tokenizers import Tokenizer

RUN_FILES = ("config.json", "metrics.jsonl", BEST, LAST)
TOKENS, TOKENS_META = "tokens.bin", "tokens.json"  # the memory-mapped token file of a run
_STATS = ("chars", "bytes", "replacements", "sha256")


def holds_run(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).exists() for name in RUN_FILES)


def prepare_run_dir(
    out: str | os.PathLike | None, stem: str, root: str | os.PathLike = "checkpoints"
) -> tuple[Path, Path | None]:
    """The run directory to write to, and the outermost directory created for it (or None);
    never a directory that already holds a run.

    An explicit ``--out`` that holds a run is refused. The default ``checkpoints/<stem>`` moves on
    to ``<stem>-2``, ``<stem>-3``, ... so a second run never overwrites the first.
    """
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirectoryError(f"--out {run_dir}: exists and is not a directory")
        if holds_run(run_dir):
            raise RunDirectoryError(
                f"--out {run_dir}: already holds a run; choose another --out or move that run away"
            )
    else:
        run_dir = Path(root) / stem
        n = 2
        while holds_run(run_dir):
            run_dir = Path(root) / f"{stem}-{n}"
            n += 1
    # The outermost directory this call creates: removing it undoes everything it made.
    created = None
    for directory in [run_dir, *run_dir.parents]:
        if directory.exists():
            break
        created = directory
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirectoryError(f"{run_dir}: cannot create the run directory ({e.strerror})") from None
    cleanup_temp_files(run_dir)
    return run_dir, created


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a temporary file beside it, then a rename."""
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    state = tokenizer.to_state()
    return hashlib.sha256(repr(sorted(state.items())).encode()).hexdigest()


def token_ids(
    run_dir: Path,
    source: TextSource,
    tokenizer: Tokenizer,
    expected_sha256: str | None = None,
    private: str | None = None,
) -> tuple[np.ndarray, dict, str]:
    """The text's ids, memory-mapped from the run's token file (``tokens.bin``); with what the
    text held (chars, bytes, replacements, sha256) and a line saying where the ids came from.

    With ``expected_sha256`` (a resumed run, or another torchrun rank), the file is reused when
    the text and tokenizer are those it was made from, and a text that has changed is refused.
    ``private`` (a prefix): when the run's file cannot be used, encode into a new temporary
    directory instead of the run directory (a rank on another machine).
    """
    dtype = np.dtype(token_dtype(tokenizer.vocab_size))
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
                return open_tokens(path, dtype, meta["count"]), {k: meta[k] for k in _STATS}, f"reused {path}"
        except (OSError, ValueError, KeyError, TypeError):
            pass  # no usable file: encode again
    if private:
        path = Path(tempfile.mkdtemp(prefix=private)) / TOKENS
    encoded = encode_to_file(source, tokenizer, path)
    stats = {k: getattr(encoded.stats, k) for k in _STATS}
    if not private:
        write_json(meta_path, dict(key, text_sha256=stats["sha256"], count=len(encoded.ids), **stats))
    return encoded.ids, stats, f"wrote {path}"


def corpus_record(source: TextSource, stats: dict) -> dict:
    """What a checkpoint records of its text, for ``--resume`` to find and check it."""
    return {
        "name": source.name,
        "path": None if source.path is None else str(source.path.resolve()),
        "builtin": source.name == BUILTIN_NAME,
        "encoding_errors": source.encoding_errors,
        **stats,
    }


def source_of(corpus: dict, encoding_errors: str) -> TextSource:
    """The text a run was trained on, from its checkpoint's record."""
    if corpus.get("builtin"):
        return TextSource.builtin()
    path = corpus.get("path")
    if not path or not Path(path).is_file():
        where = f"which is no longer at {path}" if path else "which was not a file"
        raise DataError(
            f"the run was trained on {corpus.get('name')}, {where}; give the text: "
            "charlstm train FILE --resume RUN"
        )
    return TextSource.from_file(path, encoding_errors)
