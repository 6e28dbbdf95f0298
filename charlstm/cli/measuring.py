"""``charlstm eval``, ``inspect`` and ``experiment``: measuring a model and looking inside it."""

from __future__ import annotations

import dataclasses

import click

from charlstm.cli.base import (
    _given,
    adapt_options,
    cli,
    config_file_option,
    config_option,
    device_option,
    json_option,
)
from charlstm.config import (
    SHOW_CHOICES,
    AdaptConfig,
    EvalConfig,
    ExperimentConfig,
    flag,
)
from charlstm.errors import CharlstmError

# ----------------------------------------------------------------------------------------- eval


@cli.command(name="eval")
@config_file_option
@click.argument("checkpoint", type=click.Path())
@click.argument("file", type=click.Path())
@json_option
@config_option(EvalConfig, "batch_size")
@config_option(EvalConfig, "bptt")
@config_option(EvalConfig, "adapt")
@adapt_options
@config_option(EvalConfig, "device")
@config_option(EvalConfig, "encoding_errors")
def eval_(checkpoint: str, file: str, as_json: bool, **options) -> None:
    """Measure CHECKPOINT on FILE: loss, perplexity, bits per character and per byte.

    \b
      charlstm eval checkpoints/my_text held_out.txt
      charlstm eval checkpoints/my_text held_out.txt --adapt      static and dynamic evaluation
    """
    from pathlib import Path

    import charlstm

    given = _given(options)
    config = EvalConfig.from_dict(given)
    adapt_config = AdaptConfig.from_dict(given)
    if not config.adapt and any(name in given for name in AdaptConfig.field_names()):
        raise click.UsageError("--adapt-lr, --adapt-decay and --adapt-bptt need --adapt")
    lm = charlstm.load(checkpoint, device=config.device)
    settings = {k: v for k, v in config.to_dict().items() if k != "device"}
    if config.adapt:
        settings.update(adapt_config.to_dict())
    from charlstm.display import token_progress

    with token_progress("adapting", enabled=config.adapt) as on_progress:
        report = lm.evaluate(file, **settings, on_progress=on_progress)
    show_eval_report(report, str(Path(file)), as_json)  # the name as the text source gives it


def show_eval_report(report, name: str, as_json: bool) -> None:
    """``eval``'s report: a table, or one line of JSON."""
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict()))
    else:
        from charlstm.display import print_eval_report

        print_eval_report(report, name)


# -------------------------------------------------------------------------------------- inspect


@cli.command()
@config_file_option
@click.argument("checkpoint", type=click.Path())
@click.argument("file", required=False, type=click.Path())
@click.option("--text", help="The text to run the model over (instead of FILE).")
@click.option(
    "--max-chars", default=2000, show_default=True, type=click.IntRange(1), help="Read this much of FILE."
)
@click.option(
    "--show",
    "quantity",
    type=click.Choice(SHOW_CHOICES),
    help="What to search and colour by  [default: cell for an LSTM, hidden otherwise]",
)
@click.option("--layer", type=click.IntRange(1), help="Only this layer (1 = the first).")
@click.option(
    "--unit", type=click.IntRange(0), help="Show this unit instead of searching for interpretable ones."
)
@click.option(
    "--at", type=click.IntRange(0), help="Token index for the top-5 predictions  [default: the last]"
)
@click.option(
    "--html", "html_out", type=click.Path(dir_okay=False), help="Also write the pictures to this page."
)
@click.option(
    "--png",
    "png_out",
    type=click.Path(dir_okay=False),
    help="Also draw the units over the text's first 600 characters to this PNG (needs matplotlib).",
)
def inspect(checkpoint, file, text, max_chars, quantity, layer, unit, at, html_out, png_out) -> None:
    """See inside a model: activations over a text, interpretable units, gates and predictions.

    \b
      charlstm inspect checkpoints/my_text --text 'He said "yes" (twice).'
      charlstm inspect checkpoints/my_text notes.txt --show forget --layer 2 --unit 17
      charlstm inspect checkpoints/my_text notes.txt --html inside.html --png inside.png
    """
    from pathlib import Path

    if (text is None) == (file is None):
        raise click.UsageError("give FILE or --text (one of them)")
    if html_out is not None and png_out is not None and Path(html_out).resolve() == Path(png_out).resolve():
        raise click.UsageError("--html and --png name the same file")
    for option, path in (("--html", html_out), ("--png", png_out)):
        if path is not None and Path(path).exists():
            raise CharlstmError(f"{option} {path}: already exists; choose another name or remove it first")
    import charlstm
    from charlstm.display import inspection_html, print_inspection

    lm = charlstm.load(checkpoint, device="cpu")
    report = lm.inspect(text, file=file, max_chars=max_chars, show=quantity, layer=layer, unit=unit, at=at)
    print_inspection(report, lm.config)
    if html_out is not None:
        from charlstm.atomic import atomic_write

        atomic_write(html_out, inspection_html(report, f"charlstm inspect {checkpoint}"))
        click.echo(f"wrote {html_out}", err=True)
    if png_out is not None:
        from charlstm.display import inspection_png

        if not report.units:
            click.echo(f"--png {png_out}: no units to draw (nothing varies in this text); no picture", err=True)
        elif inspection_png(report, png_out):
            click.echo(f"wrote {png_out}", err=True)
        else:
            click.echo(
                f"--png {png_out}: matplotlib is not installed (pip install matplotlib); no picture", err=True
            )


# ----------------------------------------------------------------------------------- experiment


@cli.group()
def experiment() -> None:
    """Experiments on how recurrent cells behave (see the README's long-range section)."""


def _comma_list(kind):
    """A Click callback: ``--distances 10,30,100`` -> (10, 30, 100); the config checks the values."""

    def parse(ctx, param, value: str | None):
        if value is None:
            return None
        try:
            return tuple(dict.fromkeys(kind(item.strip()) for item in value.split(",") if item.strip()))
        except ValueError:
            raise click.BadParameter(f"{value}: give whole numbers separated by commas") from None

    return parse


def _list_option(name: str, kind):
    f = {f.name: f for f in dataclasses.fields(ExperimentConfig)}[name]
    shown = ",".join(map(str, f.default))
    return click.option(
        flag(name), callback=_comma_list(kind), help=f"{f.metadata['help']}  [default: {shown}]"
    )


@experiment.command("long-range")
@config_file_option
@click.option(
    "--quick", is_flag=True, help="Seconds, not minutes: distances 5 and 20, budget 100, tiny models."
)
@_list_option("tasks", str)
@_list_option("distances", int)
@config_option(ExperimentConfig, "seeds")
@config_option(ExperimentConfig, "budget")
@config_option(ExperimentConfig, "hidden_size")
@config_option(ExperimentConfig, "lr")
@config_option(ExperimentConfig, "curriculum")
@config_option(ExperimentConfig, "jobs")
@device_option
@click.option("--png", type=click.Path(dir_okay=False), help="Also plot to this PNG (needs matplotlib).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write every result as JSON.")
def long_range(quick: bool, device: str, png: str | None, json_out: str | None, **options) -> None:
    """Can LSTM, GRU and tanh-RNN models remember across d steps, and how fast do their gradients
    vanish?

    Two tasks: recall one symbol across d distractors; copy four symbols in order after d blanks.
    For every cell, distance and seed, a fresh model with the same number of parameters trains
    until it solves the task on held-out sequences (99%) or for twice the budget; the tables show
    how many seeds solved it and the steps it took, and the doubling check says whether the budget
    was enough. Then, on the models that learnt, ||dloss/dh(T-k)|| against k and the forget
    gates of the LSTM that remembers. Uses the GPU when there is one, else one process per core.
    """
    import importlib.util
    from pathlib import Path

    from charlstm.display.long_range import ExperimentProgress, plot_long_range, print_long_range, print_start
    from charlstm.analysis.experiment import plan, run_experiment, worker_count
    from charlstm.hardware import select_device

    given = _given(options)
    config = ExperimentConfig.quick(**given) if quick else ExperimentConfig(**given)
    if png is not None and json_out is not None and Path(png).resolve() == Path(json_out).resolve():
        raise click.UsageError("--png and --json name the same file")
    for path in (png, json_out):
        if path is not None and Path(path).exists():
            raise CharlstmError(f"{path}: already exists; choose another name or remove it first")
        if path is not None and not Path(path).resolve().parent.is_dir():
            raise CharlstmError(f"{path}: its directory does not exist")
    if png is not None and importlib.util.find_spec("matplotlib") is None:
        click.echo(
            f"--png {png}: matplotlib is not installed (pip install matplotlib); tables only", err=True
        )
        png = None
    where = select_device(device).type
    if where not in ("cpu", "cuda"):
        where = "cpu"  # MPS lacks some of the fused layers' backward passes; these models are small
    total = len(plan(config, where))
    print_start(config, total, worker_count(config, total, where), where)
    progress = ExperimentProgress(total)
    try:
        report = run_experiment(config, where, progress)
    finally:
        progress.close()
    print_long_range(report)
    if json_out is not None:
        import json

        from charlstm.atomic import atomic_write

        atomic_write(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)
    if png is not None and plot_long_range(report, png):
        click.echo(f"wrote {png}", err=True)
