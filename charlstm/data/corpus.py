"""A corpus of many files: which files a command line names, and streaming them one after another.

``expand_paths`` turns FILE arguments into a sorted list of files:

- a file is taken as it is (whatever its name);
- a directory gives its text files, recursively, sorted by path: hidden files and directories
  (names starting with ``.``) are left out, and so are files whose first 8 KB look binary (a NUL
  byte, or a UTF-16/UTF-32 byte-order mark). Everything else counts as text and is checked like
  a single file (UTF-8, not empty);
- an argument that is not a file or directory and holds ``*``, ``?`` or ``[`` is a pattern,
  expanded by charlstm with ``glob.glob(..., recursive=True)`` (so ``**`` matches any depth),
  sorted; a directory it matches is read as above.

A directory with no text files, or a pattern that matches nothing, is an error naming it. A file
named twice is read once (the first time).

``Corpus`` streams the files with ``separator`` between them (default a blank line, ``"\\n\\n"``).
The separator is completed, not repeated: a file that already ends with the start of it (its
final newline) gets only the rest, so with the default every two files are separated by exactly
one blank line whether or not they end in a newline; a file that ends in blank lines keeps them.
Each file is read in chunks (``TextSource``), never whole, and checked as a single file is: a
problem is the same one line, naming the file.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from charlstm.errors import DataError
from charlstm.data.text import TextSource, TextStats, file_sha256

DEFAULT_SEPARATOR = "\n\n"
SNIFF_BYTES = 8192  # how much of a file in a directory is looked at to tell text from binary
_MAGIC = ("*", "?", "[")


def looks_binary(path: Path) -> bool:
    """Whether a file's start says it is not UTF-8 text: a NUL byte in its first 8 KB, or a
    UTF-16/UTF-32 byte-order mark."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False  # unreadable: left in, so the read names the problem
    boms = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
    return b"\x00" in head or head.startswith(boms)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def text_files_in(directory: Path) -> list[Path]:
    """The text files under ``directory``, recursively, sorted by path (see the module's rules)."""
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        for name in files:
            path = Path(root) / name
            if not _hidden(name) and path.is_file() and not looks_binary(path):
                found.append(path)
    return sorted(found, key=lambda p: p.relative_to(directory).parts)


def is_pattern(arg: str) -> bool:
    return any(c in arg for c in _MAGIC)


def expand_paths(args: Sequence[str | os.PathLike]) -> list[Path]:
    """The files that FILE arguments name: files, directories and patterns, in order, each file
    once."""
    files: list[Path] = []
    for arg in map(str, args):
        path = Path(arg)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = text_files_in(path)
            if not found:
                raise DataError(
                    f"{arg}: is a directory with no text files in it (hidden files and files that look "
                    "binary are left out)"
                )
        elif is_pattern(arg):
            found = []
            for match in sorted(glob.glob(arg, recursive=True)):
                match = Path(match)
                found += text_files_in(match) if match.is_dir() else [match] if match.is_file() else []
            if not found:
                raise DataError(f"{arg}: no file matches this pattern")
        elif path.exists():
            raise DataError(f"{arg}: not a regular file")
        else:
            raise DataError(f"{arg}: no such file")
        files += found
    seen: set[Path] = set()
    unique = []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def stem_of(arg: str | os.PathLike) -> str:
    """The default run directory name for a corpus whose first argument is ``arg``."""
    arg = str(arg)
    if is_pattern(arg):
        parts = [p for p in Path(arg).parts if not is_pattern(p)]
        return Path(*parts).name if parts else "corpus"
    return Path(arg.rstrip("/") or "corpus").stem or "corpus"


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(separator: str) -> str:
    """``--separator`` as typed, with the backslash escapes ``\\n``, ``\\t``, ``\\r`` and
    ``\\\\`` read (any other backslash is kept as it is)."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), separator)


def completion(tail: str, separator: str) -> str:
    """What to add after a text ending in ``tail`` so that it ends with ``separator``: the part of
    the separator that the text does not already end with."""
    for overlap in range(min(len(tail), len(separator)), 0, -1):
        if tail.endswith(separator[:overlap]):
            return separator[overlap:]
    return separator


def identity(file_sha256s: Sequence[str], separator: str, val_count: int) -> str:
    """The SHA-256 that identifies a corpus: its files' SHA-256s in order, the separator and the
    number of validation files (what ``--resume`` and the token file cache compare)."""
    digest = hashlib.sha256(b"charlstm corpus\n")
    for sha in file_sha256s:
        digest.update(sha.encode() + b"\n")
    digest.update(repr(separator).encode() + f"\nval {val_count}".encode())
    return digest.hexdigest()


class Corpus:
    """Several text files read as one text, joined by ``separator``. ``val_files`` are held out:
    they come last, and validation is exactly them.

    A ``charlstm.data.source.Source``, as a ``TextSource`` is; it keeps what the last pass saw of
    each file in ``file_stats``.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        *,
        separator: str | None = None,
        val_files: Sequence[str | os.PathLike] = (),
        encoding_errors: str = "strict",
        stem: str | None = None,
        skipped: Sequence[dict] = (),
    ):
        val = [Path(p) for p in val_files]
        val_keys = {p.resolve() for p in val}
        self.train_paths = [Path(p) for p in files if Path(p).resolve() not in val_keys]
        self.val_paths = val
        if not self.train_paths:
            raise DataError("no files are left to train on: every file given is a --val-files file")
        self.separator_given = separator is not None  # else a resumed run keeps its own
        self.separator = DEFAULT_SEPARATOR if separator is None else separator
        self.encoding_errors = encoding_errors
        self.stem = stem or stem_of(self.train_paths[0])
        self.skipped = list(skipped)  # {"path", "reason"} of files --skip-bad-files left out
        self.file_stats: dict[str, TextStats] = {}
        self._sha256: dict[str, str] = {}

    @classmethod
    def from_args(
        cls,
        args: Sequence[str | os.PathLike],
        *,
        separator: str | None = None,
        val_args: Sequence[str | os.PathLike] = (),
        encoding_errors: str = "strict",
    ) -> Corpus:
        """The corpus FILE arguments (and ``--val-files`` arguments) name."""
        files = expand_paths(args)
        val = expand_paths(val_args) if val_args else []
        return cls(files, separator=separator, val_files=val, encoding_errors=encoding_errors, stem=stem_of(args[0]))

    @property
    def paths(self) -> list[Path]:
        return self.train_paths + self.val_paths

    @property
    def name(self) -> str:
        names = [str(p) for p in self.paths]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"{len(names)} files ({shown})"

    def sources(self) -> list[TextSource]:
        return [TextSource(str(p), p.stem, path=p, encoding_errors=self.encoding_errors) for p in self.paths]

    def size_hint(self) -> int:
        return sum(p.stat().st_size for p in self.paths) + len(self.separator) * (len(self.paths) - 1)

    def file_sha256(self, path: Path) -> str:
        key = str(path)
        if key not in self._sha256:
            try:
                self._sha256[key] = file_sha256(path)
            except OSError as e:
                raise DataError(f"{path}: cannot read ({e.strerror})") from None
        return self._sha256[key]

    def sha256(self) -> str:
        return identity([self.file_sha256(p) for p in self.paths], self.separator, len(self.val_paths))

    def files_record(self) -> list[dict]:
        """Each file: its path, size in bytes and SHA-256 (and what the last pass saw of it)."""
        record = []
        for path in self.paths:
            entry = {
                "path": str(path.resolve()),
                "name": str(path),
                "size": path.stat().st_size,
                "sha256": self.file_sha256(path),
            }
            if str(path) in self.file_stats:
                entry["chars"] = self.file_stats[str(path)].chars
            record.append(entry)
        return record

    def record(self, stats: TextStats) -> dict:
        """What a checkpoint records of the corpus (``stats``: a full pass's), for ``--resume`` to
        find and check it: every file with its size and SHA-256, and how they were joined."""
        return {
            "name": self.name,
            "path": None,
            "builtin": False,
            "encoding_errors": self.encoding_errors,
            **stats.to_dict(),
            "files": self.files_record(),
            "val_files": [str(p.resolve()) for p in self.val_paths],
            "separator": self.separator,
            "skipped": self.skipped,
            "stem": self.stem,
        }

    def adopt(self, record: dict, encoding_errors: str) -> None:
        """Read the files, given again to resume the run of ``record``, as that run read them:
        its ``--encoding-errors``, and its separator unless one is given now. Files that are not
        those the run was trained on are refused (``check_unchanged``)."""
        self.encoding_errors = encoding_errors
        if not self.separator_given and "separator" in record:
            self.separator = record["separator"]  # the files given again, joined as before
        self.check_unchanged(record)

    def check_unchanged(self, record: dict) -> None:
        """Refuse files that are not those the run of ``record`` was trained on, naming the first
        that changed (or is missing)."""
        files = record.get("files")
        if not files:
            return
        now = self.paths
        for i, entry in enumerate(files):
            if i >= len(now):
                raise DataError(
                    f"{entry['name']}: the run was trained on this file too and it is not given now; "
                    "resuming would not continue the same data"
                )
            if self.file_sha256(now[i]) != entry["sha256"]:
                raise DataError(
                    f"{now[i]}: this file has changed since the run started (its SHA-256 differs), so "
                    "resuming would not continue the same data; start a new run on it instead"
                )
        if len(now) > len(files):
            raise DataError(
                f"{now[len(files)]}: the run was not trained on this file; resuming would not continue the "
                "same data; start a new run instead"
            )

    def files_info(self, val_fraction: float) -> dict:
        """What the start of training shows of the files: how many, how many were skipped, and
        what validation is."""
        return {
            "files": len(self.paths),
            "skipped": len(self.skipped),
            "validation": (
                f"files {', '.join(map(str, self.val_paths))}"
                if self.val_paths
                else f"the last {val_fraction * 100:g}% of the joined text"
            ),
        }

    def check(self, skip_bad: bool = False) -> list[dict]:
        """Read every file once, checking it as a single file is checked. A bad file stops with
        its one-line message; with ``skip_bad``, it is left out instead. Returns what was left out
        (``{"path", "reason"}``); a corpus left with no training file is an error."""
        skipped = []
        for source in self.sources():
            stats = TextStats()
            try:
                for _ in source.chunks(stats):
                    pass
            except DataError as e:
                if not skip_bad:
                    raise
                skipped.append({"path": str(source.path), "reason": str(e)})
                continue
            self.file_stats[str(source.path)] = stats
            self._sha256[str(source.path)] = stats.sha256
        if skipped:
            bad = {Path(s["path"]) for s in skipped}
            self.train_paths = [p for p in self.train_paths if p not in bad]
            self.val_paths = [p for p in self.val_paths if p not in bad]
            self.skipped += skipped
            if not self.train_paths:
                raise DataError(
                    f"every file to train on was left out as bad ({len(skipped)} files); nothing to train on"
                )
        return skipped

    def sections(self, stats: TextStats | None = None) -> list[Iterator[str]]:
        """The text as one or two runs of chunks: the training files, then the validation files
        (when there are any). ``stats`` is complete when the last one ends."""
        stats = TextStats() if stats is None else stats
        if not self.val_paths:
            return [self._chunks(stats, self.paths, last=True)]
        return [self._chunks(stats, self.train_paths, last=False), self._chunks(stats, self.val_paths, last=True)]

    def chunks(self, stats: TextStats | None = None) -> Iterator[str]:
        stats = TextStats() if stats is None else stats
        for section in self.sections(stats):
            yield from section

    def read(self, stats: TextStats | None = None) -> str:
        return "".join(self.chunks(stats))

    def _chunks(self, stats: TextStats, paths: list[Path], last: bool) -> Iterator[str]:
        sources = [s for s in self.sources() if s.path in paths]
        for i, source in enumerate(sources):
            file_stats = TextStats()
            tail = ""
            for chunk in source.chunks(file_stats):
                tail = (tail + chunk)[-len(self.separator) :] if self.separator else ""
                yield chunk
            self.file_stats[str(source.path)] = file_stats
            self._sha256[str(source.path)] = file_stats.sha256
            stats.chars += file_stats.chars
            stats.bytes += file_stats.bytes
            stats.replacements += file_stats.replacements
            if i < len(sources) - 1 or not last:
                joint = completion(tail, self.separator)
                if joint:
                    stats.chars += len(joint)
                    stats.bytes += len(joint.encode("utf-8", "surrogatepass"))
                    yield joint
        if last:
            stats.sha256 = identity(
                [self._sha256[str(p)] for p in self.paths], self.separator, len(self.val_paths)
            )
