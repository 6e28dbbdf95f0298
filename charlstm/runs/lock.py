"""One writer per run: an advisory lock on ``RUN/.lock``, held while a process trains the run.

``fcntl.flock`` (POSIX) or ``msvcrt.locking`` (Windows) on an open file: the kernel releases it
when the process ends, however it ends, so a lock left by a killed process never blocks the next
run. The file records the holder's PID and host, so a second ``charlstm train`` can name the
process that holds the run. Readers (``sample``, ``eval``) never take it: checkpoints are replaced
whole (``atomic.atomic_write``), so reading one while a run trains is safe.

The lock file is removed when the lock is released; ``acquire`` checks that the file it locked is
still the one at ``RUN/.lock`` (a process that opened it just before the holder removed it would
otherwise hold a lock on a file nobody else sees).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from charlstm.atomic import write_error
from charlstm.errors import RunDirectoryError, RunLockedError

LOCK = ".lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    try:
        import msvcrt
    except ImportError:  # neither: runs are not locked (there is nothing to lock with)
        msvcrt = None


def _try_lock(fd: int) -> bool:
    """Take the lock on ``fd`` without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    if msvcrt is not None:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
    return True


def _holder(fd: int) -> str:
    """Who holds the lock, as the lock file records it."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 4096))
        return f"pid {int(record['pid'])} on host {record['host']}"
    except (OSError, ValueError, KeyError, TypeError):  # it is still being written
        return "pid unknown"


class RunLock:
    """The lock of one run directory. ``acquire(run_dir)`` takes it or raises ``RunLockedError``
    naming the process that holds it; ``release`` (also on ``with`` exit) gives it back and
    removes the lock file. A ``RunLock`` that was never acquired releases nothing."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, run_dir: str | os.PathLike) -> RunLock:
        if self.held:
            raise RuntimeError(f"this lock already holds {self.path}")
        path = Path(run_dir) / LOCK
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for every file
            except OSError as e:
                raise RunDirectoryError(
                    f"{run_dir}: cannot create the lock file {LOCK} ({e.strerror}); check that the run "
                    "directory is writable"
                ) from None
            if not _try_lock(fd):
                holder = _holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{run_dir}: another charlstm process ({holder}) is training this run; wait for it "
                    "to finish or stop it"
                )
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except OSError:  # removed by the holder we waited on: try the new file
                same = False
            if same:
                break
            os.close(fd)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, record)
        except OSError as e:  # a full disk: give the lock back, say so in one line
            os.close(fd)
            raise write_error(path, e) from None
        self.path, self._fd = path, fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding it: see the module docstring
        except OSError:  # Windows cannot remove an open file; the lock still goes with the handle
            pass
        os.close(self._fd)  # releases the lock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
