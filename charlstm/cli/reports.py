"""``charlstm info`` and ``charlstm plot``: what runs did, read from their directories."""

from __future__ import annotations

import click

from charlstm.cli.base import (
    check_new_files,
    cli,
    config_file_option,
    force_option,
    json_option,
    out_option,
    runs_argument,
)
from charlstm.errors import CharlstmError

# ----------------------------------------------------------------------------------- info, plot


def _summaries(runs: tuple[str, ...]):
    import charlstm

    return [charlstm.read_run(run) for run in runs]


def _is_compressed(path: str) -> bool:
    """Whether ``path`` is a ``.clstm`` file (by its name or its first bytes), not a run."""
    from pathlib import Path

    if path.endswith(".clstm"):
        return True
    if not Path(path).is_file():
        return False
    from charlstm.compression.format import MAGIC, MAGIC3

    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
    return head.startswith(MAGIC3) or head.startswith(MAGIC)


@cli.command()
@config_file_option
@runs_argument
@json_option
def info(runs: tuple[str, ...], as_json: bool) -> None:
    """One row per run: how it was started, model, tokenizer, data, steps, time, best validation
    loss, status (running, finished and why, killed) and its last sample. For a .clstm file, what
    its header says (as xz -l does): sizes, settings, the model's digest, the machine.

    Works on a finished run, a running one and a killed one (it reads only whole files).

    RUN: a run directory (what train --out made); or a .clstm file (what compress wrote; no model
    needed).
    """
    import charlstm

    items = [charlstm.read_compressed(p) if _is_compressed(p) else charlstm.read_run(p) for p in runs]
    if as_json:
        import json

        click.echo(json.dumps([item.to_dict() for item in items], indent=2))
        return
    from charlstm.display import print_compressed, print_runs

    summaries = [item for item in items if not isinstance(item, charlstm.CompressedFile)]
    if summaries:
        print_runs(summaries)
    files = [item for item in items if isinstance(item, charlstm.CompressedFile)]
    if files:
        print_compressed(files)


@cli.command()
@config_file_option
@runs_argument
@out_option("Write a PNG here (needs matplotlib).")
@force_option
def plot(runs: tuple[str, ...], out: str | None, force: bool) -> None:
    """Loss curves of RUNs: a PNG of training and validation loss against steps and against time
    with --out (needs matplotlib), else a small chart in the terminal.

    RUN: a run directory (what train --out made).
    """
    if out is not None:
        check_new_files(force, out=out)
    summaries = _summaries(runs)
    if out is None:
        from charlstm.display import print_curves

        print_curves(summaries)
        return
    from charlstm.display import plot_runs

    try:
        plot_runs(summaries, out)
    except ImportError:
        raise CharlstmError(
            "plot --out needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'charlstm[plot]'); without --out the curves are drawn in the terminal"
        ) from None
    click.echo(f"wrote {out}", err=True)
