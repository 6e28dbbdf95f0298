"""``charlstm train`` and ``charlstm demo``: FILE arguments -> text source, options -> one API
call (``charlstm.train`` / ``charlstm.resume``), progress and summary through ``charlstm.display``."""

from __future__ import annotations

import shlex
import sys

import click

from charlstm.cli.base import (
    EXIT_SIGNAL,
    _given,
    cli,
    config_file_option,
    config_option,
    device_option,
)
from charlstm.config import (
    ModelShape,
    TrainConfig,
)


def _text_source(
    files: tuple[str, ...] | str | None,
    encoding_errors: str = "strict",
    separator: str | None = None,
    val_files: tuple[str, ...] = (),
    skip_bad_files: bool = False,
):
    """What FILE arguments name (``charlstm.api.text_source``), saying on stderr what was
    chosen or left out."""
    from charlstm.api import text_source
    from charlstm.data.text import BUILTIN_NAME
    from charlstm.distributed import is_main_process

    files = (files,) if isinstance(files, str) else tuple(files or ())
    if not files:
        if val_files:
            raise click.UsageError("--val-files needs FILE arguments to train on")
        if is_main_process():
            click.echo(f"No FILE given: training on the built-in corpus, {BUILTIN_NAME}.", err=True)
    source = text_source(
        files, separator=separator, val_files=val_files, skip_bad_files=skip_bad_files, encoding_errors=encoding_errors
    )
    skipped = getattr(source, "skipped", [])
    if skipped and is_main_process():
        for entry in skipped:
            click.echo(f"warning: skipped {entry['reason']}", err=True)
        click.echo(f"skipped {len(skipped)} bad file(s) of {len(skipped) + len(source.paths)}", err=True)
    return source


# ---------------------------------------------------------------------------------------- train


def _train_options(function):
    """One option per ``TrainConfig`` and ``ModelShape`` field, in the order ``--help`` shows."""
    names = [(TrainConfig, n) for n in ("tokenizer", "vocab_size", "val_fraction")]
    names += [(ModelShape, n) for n in ModelShape.field_names()]
    names += [
        (TrainConfig, n)
        for n in TrainConfig.field_names()
        if n not in ("tokenizer", "vocab_size", "val_fraction")
    ]
    for cls, name in reversed(names):
        function = config_option(cls, name)(function)
    return function


@cli.command()
@config_file_option
@click.argument("files", nargs=-1, metavar="[FILE]...", type=click.Path())
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory  [default: checkpoints/<file stem>]"
)
@click.option(
    "--separator",
    help="Put between files (backslash escapes read; completed, not repeated, after a file's final "
    "newline)  [default: '\\n\\n', a blank line]",
)
@click.option(
    "--val-files",
    multiple=True,
    type=click.Path(),
    help="Validate on these whole files (repeat it; directories and patterns too) instead of the "
    "last --val-fraction of the text.",
)
@click.option(
    "--skip-bad-files", is_flag=True, help="Leave out files that are not usable text (a warning each)."
)
@click.option(
    "--init-from",
    metavar="RUN",
    type=click.Path(),
    help="Fine-tune: start a new run from this run's (or checkpoint's) weights and tokenizer.",
)
@click.option(
    "--strict-vocab",
    is_flag=True,
    help="With --init-from: refuse a text with characters a char model has never seen.",
)
@click.option(
    "--resume",
    metavar="RUN",
    type=click.Path(),
    help="Continue the run in this directory exactly where it stopped (FILE defaults to its text).",
)
@_train_options
def train(
    files: tuple[str, ...],
    out: str | None,
    resume: str | None,
    separator: str | None,
    val_files: tuple[str, ...],
    skip_bad_files: bool,
    init_from: str | None,
    strict_vocab: bool,
    **options,
) -> None:
    """Train a model on FILES (UTF-8 text files, directories of them, or quoted patterns such as
    'poems/**/*.md'; default: the built-in corpus).

    Several files are read one after another, joined by --separator. Line ends are kept as they
    are (CRLF text is learnt, sampled and measured with its CRs).
    """
    import charlstm
    from charlstm.display import TrainProgress

    given = _given(options)
    corpus_options = (separator, val_files, skip_bad_files)
    if resume is not None:
        if out is not None:
            raise click.UsageError("--out cannot be used with --resume: a resumed run stays in its directory")
        if init_from is not None:
            raise click.UsageError(
                "--init-from cannot be used with --resume: a resumed run goes on from its own weights"
            )
        source = (
            None
            if not files
            else _text_source(files, given.get("encoding_errors", "strict"), *corpus_options)
        )
        with TrainProgress() as progress:
            result = charlstm.resume(resume, source, progress=progress, command=_command_line(), **given)
    else:
        config = TrainConfig.from_dict(given)
        ModelShape.from_dict(given)  # bad model options are reported before any work
        if init_from is None and strict_vocab:
            raise click.UsageError("--strict-vocab goes with --init-from")
        if given.get("size") == "auto" and config.max_time is None:
            raise click.UsageError("--size auto needs --max-time: it sizes the model for the time budget")
        source = _text_source(files, config.encoding_errors, *corpus_options)
        if given.get("cell") == "ln-lstm":
            _load_ln_kernel()
        elif _auto_may_choose_the_cell(config, given):
            _load_ln_kernel(warn=False)
        with TrainProgress() as progress:
            result = charlstm.train(
                source, out=out, progress=progress, init_from=init_from, strict_vocab=strict_vocab,
                command=_command_line(), **given,
            )
    _exit_if_stopped_by_signal(result)


def _auto_may_choose_the_cell(config: TrainConfig, given: dict) -> bool:
    """Whether --size auto will choose the cell (and may choose the LN-LSTM): no cell or size given."""
    from charlstm.training.sizing import SHAPE_FIELDS

    chosen = set(given) & {*SHAPE_FIELDS, "cell"}
    return config.size == "auto" and config.max_time is not None and not chosen and _on_the_cpu(config.device)


def _on_the_cpu(device: str) -> bool:
    import torch

    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


def _load_ln_kernel(warn: bool = True) -> None:
    """The LN-LSTM's C++ recurrence built now, saying so (not silently inside the run); ``warn``:
    say why it runs in Python where it cannot be built (--cell ln-lstm given)."""
    from charlstm.lnlstm import kernel

    if not kernel.built_before() and kernel.compiler_available():
        click.echo("the LN-LSTM: building its C++ recurrence (once on this machine, about 30 s)", err=True)
    status = kernel.status()
    if warn and not status.built:
        click.echo(
            f"warning: --cell ln-lstm: {status.reason}; its recurrence runs in Python, about a third as fast "
            "(Debian: apt install g++ ninja-build python3-dev)",
            err=True,
        )


def _command_line() -> list[str]:
    """The command line as typed (recorded in the run's config.json)."""
    return ["charlstm", *sys.argv[1:]]


def _exit_if_stopped_by_signal(result) -> None:
    if result.stop_reason not in EXIT_SIGNAL:
        return
    from charlstm.distributed import is_main_process

    if is_main_process():
        click.echo(
            f"stopped by {result.stop_reason}: checkpoint saved to {result.last_path}; "
            f"continue with: charlstm train --resume {result.run_dir}; "
            f"try it with: charlstm sample {result.run_dir}",
            err=True,
        )
    sys.exit(EXIT_SIGNAL[result.stop_reason])


# ----------------------------------------------------------------------------------------- demo


@cli.command()
@config_file_option
@click.option("--max-time", default=120.0, show_default=True, type=float, help="Seconds of training.")
@device_option
def demo(max_time: float, device: str) -> None:
    """Train on the built-in corpus for a couple of minutes, then sample and evaluate.

    The same as `charlstm train --max-time 120`, then `charlstm sample` and `charlstm eval` on
    the held-out last tenth of the built-in corpus (the text training validated on).
    """
    import charlstm
    from charlstm.display import TrainProgress, stderr_console

    source = _text_source(None)
    if _on_the_cpu(device):
        _load_ln_kernel(warn=False)  # --size auto may choose the LN-LSTM
    with TrainProgress() as progress:
        result = charlstm.train(source, progress=progress, max_time=max_time, device=device)
    _exit_if_stopped_by_signal(result)
    console = stderr_console()
    prime, length, seed = "The ", 400, 0
    console.rule("a sample")
    # The command that writes this very sample again (its seed included), whole on one line to copy.
    command = ["charlstm", "sample", str(result.run_dir), "--prime", prime, "--length", str(length), "--seed", str(seed)]
    click.echo(shlex.join(command), err=True)
    lm = charlstm.load(result.run_dir, device=device)
    sys.stdout.write(prime)
    for piece in lm.stream(prime, length=length, seed=seed):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    console.rule("evaluation on the held-out last tenth of the built-in corpus")
    report = lm.evaluate(text=charlstm.held_out_text(result.run_dir))
    from charlstm.cli.measuring import show_eval_report

    show_eval_report(report, "built-in corpus, held-out tenth", as_json=False)
    console.print(
        "Next: [bold]charlstm train your_text.txt[/], then "
        f"[bold]charlstm sample {result.run_dir.parent}/your_text[/] (see charlstm --help)."
    )
