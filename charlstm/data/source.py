"""What training reads a text through: ``Source``, which a single text (``TextSource``) and a
corpus of many files (``Corpus``) both are.

Callers take a ``Source`` and never ask which kind it is: what differs between the two (how the
text is cut into sections, what a checkpoint records of it, how a resumed run checks it, what the
start of training says about its files) is a method of each class.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from charlstm.data.text import TextStats


class Source(Protocol):
    """A text that training reads in passes, decoded and checked as it goes."""

    name: str  # shown to the user: a path, "N files (...)", or the built-in corpus's description
    stem: str  # the default run directory's name
    encoding_errors: str  # "strict" or "replace" (``--encoding-errors``)

    def chunks(self, stats: TextStats | None = None) -> Iterator[str]:
        """The decoded text in pieces; ``stats``, when given, is complete when the pass ends."""
        ...

    def read(self, stats: TextStats | None = None) -> str:
        """The whole text at once (for small texts)."""
        ...

    def sections(self, stats: TextStats | None = None) -> list[Iterator[str]]:
        """The text as runs of chunks: one, or the training part and then the held-out part."""
        ...

    def sha256(self) -> str:
        """What identifies the text: the SHA-256 a full pass's ``stats`` will say."""
        ...

    def size_hint(self) -> int:
        """About how many characters the text holds."""
        ...

    def record(self, stats: TextStats) -> dict:
        """What a checkpoint records of the text (``stats``: a full pass's), for ``--resume`` to
        find it again and check it."""
        ...

    def adopt(self, record: dict, encoding_errors: str) -> None:
        """Read this text, given again to resume a run, as the run read it (``record``: the run's
        ``record``), refusing files that are not those the run was trained on."""
        ...

    def files_info(self, val_fraction: float) -> dict:
        """What the start of training shows of the files (``files``, ``skipped``, ``validation``);
        empty for a single text."""
        ...
