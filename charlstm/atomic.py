"""Atomic file writes: a temporary file in the same directory, flushed and fsynced, then
``os.replace`` over the target. A crash at any moment leaves the old file or the new one, never a
mixture; what an interrupted write leaves behind starts with ``TEMP_PREFIX`` and is never read.

Every file charlstm writes for the user goes through ``atomic_write``: checkpoints, the token file,
``config.json``, the inspect page, the experiment's JSON (the run's lock file, ``RUN/.lock``,
is locked in place, so it is the one exception). A write that fails is one ``WriteError`` naming
the file. The file gets the mode the umask allows (0o644 under the usual 022), as ``open`` would
give it: ``mkstemp``'s private 0o600 would keep a web server or a colleague from reading it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charlstm.errors import WriteError

TEMP_PREFIX = ".tmp-"


def atomic_write(path: str | os.PathLike, content: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write ``content`` (bytes, text as UTF-8, or a function that writes to a binary file) to
    ``path`` atomically. A failed write (disk full, read-only, permissions) leaves no temporary
    file behind and the previous file as it was, and is raised as one ``WriteError`` naming the
    file (its ``__cause__`` is the ``OSError``)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="-" + path.name, dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(path, error) from error
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def write_error(path: Path, error: OSError) -> WriteError:
    """The one line a failed write of ``path`` shows the user."""
    kept = "the previous file is kept" if path.exists() else "nothing was written"
    return WriteError(
        f"{path}: cannot write ({error.strerror or error}); {kept}. Free some disk space, or make the "
        "directory writable, and run again"
    )


def _umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's /proc);
    elsewhere set and restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cleanup_temp_files(directory: str | os.PathLike) -> int:
    """Remove what interrupted writes left in ``directory``; such files are never read."""
    removed = 0
    for tmp in Path(directory).glob(TEMP_PREFIX + "*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
