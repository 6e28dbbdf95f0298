"""What FILE arguments name: ``text_source`` (a file, several, a directory, a pattern, or the
built-in corpus), shared by training and measuring."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from charlstm.errors import ConfigError

PathLike = str | os.PathLike


def text_source(
    files: PathLike | Sequence[PathLike] | None = None,
    *,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    encoding_errors: str = "strict",
):
    """What FILE arguments name, ready to train on: none, the built-in corpus; one file, as it
    is; several files, a directory, a pattern (``'poems/**/*.md'``) or ``val_files``: a
    ``Corpus`` (``separator`` between files, backslash escapes read). With ``skip_bad_files``
    a corpus leaves out files that are not usable text (listed in its ``skipped``)."""
    from charlstm.data.corpus import Corpus, is_pattern, unescape
    from charlstm.data.text import TextSource

    files = (files,) if isinstance(files, (str, os.PathLike)) else tuple(files or ())
    val_files = (val_files,) if isinstance(val_files, (str, os.PathLike)) else tuple(val_files or ())
    if not files:
        if val_files:
            raise ConfigError("--val-files needs FILE arguments to train on")
        return TextSource.builtin()
    single = len(files) == 1 and not val_files and not Path(files[0]).is_dir()
    if single and (Path(files[0]).exists() or not is_pattern(str(files[0]))):
        return TextSource.from_file(files[0], encoding_errors)
    separator = None if separator is None else unescape(separator)
    corpus = Corpus.from_args(files, separator=separator, val_args=val_files, encoding_errors=encoding_errors)
    if skip_bad_files:
        corpus.check(skip_bad=True)
    return corpus


def _source(files, separator, val_files, skip_bad_files, encoding_errors):
    """``files`` as ``text_source`` reads them, or a source it made already, as it is."""
    if files is None or isinstance(files, (str, os.PathLike, list, tuple)):
        return text_source(
            files, separator=separator, val_files=val_files, skip_bad_files=skip_bad_files,
            encoding_errors=encoding_errors,
        )
    return files
