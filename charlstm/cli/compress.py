"""``charlstm compress`` and ``decompress``: a trained model as a lossless compressor's dictionary."""

from __future__ import annotations

import time

import click

from charlstm.cli.base import (
    _given,
    adapt_options,
    cache_options,
    check_new_files,
    cli,
    config_file_option,
    config_option,
    force_option,
    out_option,
    run_argument,
)
from charlstm.compression.settings import CompressConfig
from charlstm.config import ADAPT_NEEDS, AdaptConfig, CacheConfig, check_cache

SUFFIX = ".clstm"

_context_option = click.option(
    "--context",
    multiple=True,
    metavar="FILE",
    type=click.Path(),
    help="Text that comes before FILE (repeat for more; a directory or a quoted pattern too): read "
    "first, never coded; it starts the state, fills the cache and, with --adapt, is learnt from "
    "first, as a compressor's dictionary. Give the same to decompress.",
)


def _read(path: str) -> bytes:
    from charlstm.errors import CharlstmError

    if path == "-":
        return click.get_binary_stream("stdin").read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CharlstmError(f"{path}: cannot read ({e.strerror})") from None


def _outputs(files: tuple[str, ...], out: str | None, force: bool, name_of) -> list[str]:
    """Where each FILE's result goes (``-``: stdout), each checked before any work."""
    if out is not None and len(files) > 1:
        raise click.UsageError("--out names one file: give one FILE with it")
    targets = [out if out is not None else ("-" if f == "-" else name_of(f)) for f in files]
    for target in targets:
        if target != "-":
            check_new_files(force, out=target)
    return targets


def _write(target: str, data: bytes) -> None:
    if target == "-":
        stream = click.get_binary_stream("stdout")
        stream.write(data)
        stream.flush()
    else:
        from charlstm.atomic import atomic_write

        atomic_write(target, data)


def _context(context: tuple[str, ...]) -> bytes | None:
    from charlstm.api.compressing import context_bytes

    return context_bytes(context) if context else None


@cli.command()
@config_file_option
@run_argument
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path())
@out_option("Write here instead of FILE.clstm (one FILE; - for stdout).")
@force_option
@config_option(CompressConfig, "adapt")
@adapt_options
@cache_options
@_context_option
@config_option(CompressConfig, "streams")
@config_option(CompressConfig, "threads")
@config_option(CompressConfig, "weights")
def compress(run: str, files: tuple[str, ...], out: str | None, force: bool, context: tuple[str, ...], **options) -> None:
    """Compress FILEs losslessly with RUN as the dictionary: FILE.clstm, which only RUN decompresses.

    \b
      charlstm compress checkpoints/my_text notes.txt            notes.txt.clstm
      charlstm compress checkpoints/my_text notes.txt --adapt --cache-size 20000 --context train.txt
      cat notes.txt | charlstm compress checkpoints/my_text - > notes.clstm

    Any bytes; the model is not stored.
    RUN: a run directory, a checkpoint file or an exported folder.
    """
    import charlstm

    given = _given(options)
    if not given.get("adapt") and any(name in given for name in AdaptConfig.field_names()):
        raise click.UsageError(f"{ADAPT_NEEDS} need --adapt")
    check_cache(CacheConfig.from_dict(given))
    targets = _outputs(files, out, force, lambda f: f + SUFFIX)
    before = _context(context)
    lm = charlstm.load(run, device="cpu")
    for file, target in zip(files, targets):
        data = _read(file)
        started = time.perf_counter()
        blob = lm.compress(data, context=before, **given)
        _write(target, blob)
        seconds = time.perf_counter() - started
        rate = f"{8 * len(blob) / len(data):.3f} bits per byte" if data else "an empty file: the header alone"
        click.echo(
            f"{file}: {len(data):,} -> {len(blob):,} bytes ({rate}) in {seconds:.1f} s "
            f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s)",
            err=True,
        )


@cli.command()
@config_file_option
@run_argument
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path())
@out_option("Write here instead of FILE without .clstm (one FILE; - for stdout).")
@force_option
@_context_option
def decompress(run: str, files: tuple[str, ...], out: str | None, force: bool, context: tuple[str, ...]) -> None:
    """Decompress FILE.clstm with the RUN that compressed it (and the same --context), exactly.

    \b
      charlstm decompress checkpoints/my_text notes.txt.clstm    notes.txt
      charlstm decompress checkpoints/my_text notes.clstm --out - | less

    The checksum is checked before anything is written; a file from another model, damaged,
    truncated or from a machine that computes other probabilities is refused in one line.
    RUN: a run directory, a checkpoint file or an exported folder.
    """
    import charlstm

    def name_of(path: str) -> str:
        if not path.endswith(SUFFIX) or len(path) == len(SUFFIX):
            raise click.UsageError(f"{path}: does not end in {SUFFIX}; give --out")
        return path[: -len(SUFFIX)]

    targets = _outputs(files, out, force, name_of)
    before = _context(context)
    lm = charlstm.load(run, device="cpu")
    for file, target in zip(files, targets):
        blob = _read(file)
        started = time.perf_counter()
        data = lm.decompress(blob, context=before, name=file)
        _write(target, data)
        seconds = time.perf_counter() - started
        if target != "-":
            click.echo(
                f"{file}: {len(data):,} bytes to {target} in {seconds:.1f} s "
                f"({len(data) / 1000 / max(seconds, 1e-9):,.1f} KB/s)",
                err=True,
            )
