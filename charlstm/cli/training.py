"""``charlstm train`` and ``charlstm demo``: FILE arguments -> text source, options -> configs,
one library call (``charlstm.training.trainer``), progress and summary through ``charlstm.display``."""

from __future__ import annotations

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
    EvalConfig,
    ModelShape,
    SampleConfig,
    TrainConfig,
)


def _text_source(
    files: tuple[str, ...] | str | None,
    encoding_errors: str = "strict",
    separator: str | None = None,
    val_files: tuple[str, ...] = (),
    skip_bad_files: bool = False,
):
    """What FILE arguments name: the built-in corpus (none), one file as it is, or a ``Corpus``
    (several files, a directory, a pattern, or --val-files)."""
    from pathlib import Path

    from charlstm.distributed import is_main_process
    from charlstm.data.text import BUILTIN_NAME, TextSource

    files = (files,) if isinstance(files, str) else tuple(files or ())
    if not files:
        if val_files:
            raise click.UsageError("--val-files needs FILE arguments to train on")
        if is_main_process():
            click.echo(f"No FILE given: training on the built-in corpus, {BUILTIN_NAME}.", err=True)
        return TextSource.builtin()
    from charlstm.data.corpus import Corpus, is_pattern, unescape

    single = len(files) == 1 and not val_files and not Path(files[0]).is_dir()
    if single and (Path(files[0]).exists() or not is_pattern(files[0])):
        return TextSource.from_file(files[0], encoding_errors)
    separator = None if separator is None else unescape(separator)
    corpus = Corpus.from_args(files, separator, val_files, encoding_errors)
    if skip_bad_files:
        skipped = corpus.check(skip_bad=True)
        if is_main_process():
            for entry in skipped:
                click.echo(f"warning: skipped {entry['reason']}", err=True)
            if skipped:
                click.echo(
                    f"skipped {len(skipped)} bad file(s) of {len(skipped) + len(corpus.paths)}", err=True
                )
    return corpus


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
@click.argument("files", nargs=-1, type=click.Path())
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
        from charlstm.training.trainer import resume as resume_training

        source = (
            None
            if not files
            else _text_source(files, given.get("encoding_errors", "strict"), *corpus_options)
        )
        with TrainProgress() as progress:
            result = resume_training(resume, source, given, events=progress, command=_command_line())
    else:
        config = TrainConfig.from_dict(given)
        shape = ModelShape.from_dict(given)  # bad model options are reported before any work
        init = None
        if init_from is not None:
            from charlstm.training.finetune import plan_init

            init = plan_init(init_from, given, strict_vocab)
            config = TrainConfig.from_dict({**given, **init.train_settings})
            shape = init.shape
        elif strict_vocab:
            raise click.UsageError("--strict-vocab goes with --init-from")
        if given.get("size") == "auto" and config.max_time is None:
            raise click.UsageError("--size auto needs --max-time: it sizes the model for the time budget")
        from charlstm.training.trainer import train as run_training

        source = _text_source(files, config.encoding_errors, *corpus_options)
        shape_given = [name for name in ModelShape.field_names() if name in given]
        with TrainProgress() as progress:
            result = run_training(
                source, config, shape, out=out, events=progress, init=init, command=_command_line(),
                shape_given=shape_given,
            )
    _exit_if_stopped_by_signal(result)


def _command_line() -> list[str]:
    """The command line as typed (recorded in the run's config.json)."""
    return ["charlstm", *sys.argv[1:]]


def _exit_if_stopped_by_signal(result) -> None:
    if result.stopped_by not in EXIT_SIGNAL:
        return
    from charlstm.distributed import is_main_process

    if is_main_process():
        click.echo(
            f"stopped by {result.stopped_by}: checkpoint saved to {result.last_path}; "
            f"continue with: charlstm train --resume {result.run_dir}; "
            f"try it with: charlstm sample {result.run_dir}",
            err=True,
        )
    sys.exit(EXIT_SIGNAL[result.stopped_by])


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
    from charlstm.display import TrainProgress, stderr_console
    from charlstm.runs.directory import validation_text
    from charlstm.data.text import TextSource
    from charlstm.training.trainer import train as run_training

    config = TrainConfig(max_time=max_time, device=device)
    with TrainProgress() as progress:
        result = run_training(_text_source(None), config, ModelShape(), events=progress, shape_given=())
    _exit_if_stopped_by_signal(result)
    console = stderr_console()
    console.rule(f"charlstm sample {result.run_dir} --prime 'The ' --length 400")
    from charlstm.generation.writing import write_samples

    write_samples(
        str(result.run_dir),
        [SampleConfig(prime="The ", length=400, seed=0, device=device)],
        True,
        False,
        sys.stdout,
    )
    console.rule("evaluation on the held-out last tenth of the built-in corpus")
    held_out = TextSource.from_text(validation_text(result.run_dir), "built-in corpus, held-out tenth")
    from charlstm.cli.measuring import evaluate_and_show

    evaluate_and_show(str(result.run_dir), held_out, EvalConfig(device=device), as_json=False)
    console.print(
        "Next: [bold]charlstm train your_text.txt[/], then "
        f"[bold]charlstm sample {result.run_dir.parent}/your_text[/] (see charlstm --help)."
    )
