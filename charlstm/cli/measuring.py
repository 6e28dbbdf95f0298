"""``charlstm eval``, ``inspect`` and ``experiment``: measuring a model and looking inside it."""

from __future__ import annotations

import dataclasses

import click

from charlstm.cli.base import (
    _given,
    adapt_options,
    cache_options,
    check_new_files,
    cli,
    config_file_option,
    config_option,
    device_option,
    force_option,
    json_option,
    out_option,
    run_argument,
)
from charlstm.analysis.config import ExperimentConfig
from charlstm.config import (
    ADAPT_NEEDS,
    SHOW_CHOICES,
    AdaptConfig,
    CacheConfig,
    EvalConfig,
    SampleConfig,
    check_cache,
    flag,
)

# ----------------------------------------------------------------------------------------- eval


def _text_source(files: tuple[str, ...], encoding_errors: str = "strict"):
    """FILE arguments as ``train`` reads them (files, directories, quoted patterns), via
    ``charlstm.api.text_source``; at least one is needed."""
    from charlstm.api import text_source

    if not files:
        raise click.UsageError("give FILE (a file, a directory or a quoted pattern)")
    return text_source(files, encoding_errors=encoding_errors)


@cli.command(name="eval")
@config_file_option
@run_argument
@click.argument("files", nargs=-1, required=True, metavar="FILE...", type=click.Path())
@json_option
@config_option(EvalConfig, "batch_size")
@config_option(EvalConfig, "bptt")
@config_option(EvalConfig, "adapt")
@adapt_options
@cache_options
@click.option(
    "--context",
    multiple=True,
    metavar="FILE",
    type=click.Path(),
    help="Text that comes before FILE (repeat for more; a directory or a quoted pattern too): read "
    "first, never scored; it starts the state, fills the cache and, with --adapt, is learnt from "
    "first, as a compressor given a dictionary. E.g. the text the run trained on.",
)
@config_option(EvalConfig, "device")
@config_option(EvalConfig, "encoding_errors")
@config_option(SampleConfig, "weights")
def eval_(
    run: str, files: tuple[str, ...], as_json: bool, weights: str | None, context: tuple[str, ...], **options
) -> None:
    """Measure RUN on FILEs: loss, perplexity, bits per character and per byte.

    \b
      charlstm eval checkpoints/my_text held_out.txt
      charlstm eval checkpoints/my_text held_out.txt --adapt      static and dynamic evaluation
      charlstm eval checkpoints/my_text held_out.txt --adapt --cache-size 2000   and a neural cache
      charlstm eval checkpoints/my_text notes/ 'poems/**/*.md'    several files, read as train reads them
      charlstm eval checkpoints/my_text held_out.txt --cache-size 20000 --context train.txt

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    import charlstm

    given = _given(options)
    config = EvalConfig.from_dict(given)
    AdaptConfig.from_dict(given)  # a bad --adapt-* value: one line, before any work
    cache_config = CacheConfig.from_dict(given)
    if not config.adapt and any(name in given for name in AdaptConfig.field_names()):
        raise click.UsageError(f"{ADAPT_NEEDS} need --adapt")
    check_cache(cache_config)
    source = _text_source(files, config.encoding_errors)
    before = _text_source(context, config.encoding_errors) if context else None
    lm = charlstm.load(run, device=config.device, weights=weights or "fp32")
    settings = {k: v for k, v in config.to_dict().items() if k not in ("device", "encoding_errors")}
    if config.adapt:
        settings.update({k: v for k, v in given.items() if k in AdaptConfig.field_names()})
    settings.update(cache_config.to_dict())
    from charlstm.display import token_progress

    with token_progress("adapting", enabled=config.adapt) as on_progress:
        report = lm.evaluate(source, **settings, context=before, on_progress=on_progress)
    show_eval_report(report, source.name, as_json)


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
@run_argument
@click.argument("files", nargs=-1, metavar="[FILE]...", type=click.Path())
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
    "--unit",
    type=click.IntRange(1),
    help="Show this unit (1 = the first) instead of searching for interpretable ones.",
)
@click.option(
    "--at", type=click.IntRange(0), help="Token index for the top-5 predictions  [default: the last]"
)
@click.option(
    "--html", "html_out", metavar="PATH", type=click.Path(), help="Also write the pictures to this page."
)
@click.option(
    "--png",
    "png_out",
    metavar="PATH",
    type=click.Path(),
    help="Also draw the units over the text's first 600 characters to this PNG (needs matplotlib).",
)
@force_option
def inspect(run, files, text, max_chars, quantity, layer, unit, at, html_out, png_out, force) -> None:
    """See inside a model: activations over a text, interpretable units, gates and predictions.

    \b
      charlstm inspect checkpoints/my_text --text 'He said "yes" (twice).'
      charlstm inspect checkpoints/my_text notes.txt --show forget --layer 2 --unit 17
      charlstm inspect checkpoints/my_text notes.txt --html inside.html --png inside.png

    FILE: files, directories or quoted patterns, as train takes them (the first --max-chars of
    their text). --layer and --unit count from 1, as the labels shown do.

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    if (text is None) == (not files):
        raise click.UsageError("give FILE or --text (one of them)")
    check_new_files(force, html=html_out, png=png_out)
    import charlstm
    from charlstm.display import inspection_html, print_inspection

    source = _text_source(files) if files else None
    lm = charlstm.load(run, device="cpu")
    report = lm.inspect(text, file=source, max_chars=max_chars, show=quantity, layer=layer, unit=unit, at=at)
    print_inspection(report, lm.config)
    if html_out is not None:
        from charlstm.atomic import atomic_write

        atomic_write(html_out, inspection_html(report, f"charlstm inspect {run}"))
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
    """Experiments on how recurrent cells behave (docs/inside-the-lstm.md)."""


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
@out_option("Also write every result as JSON to this file.")
@click.option("--png", metavar="PATH", type=click.Path(), help="Also plot to this PNG (needs matplotlib).")
@force_option
@click.option(
    "--json",
    "as_json",
    is_flag=False,
    flag_value="-",
    default=None,
    metavar="",
    type=click.Path(),
    help="Print every result as JSON to stdout instead of the tables.",
)
def long_range(
    quick: bool, device: str, out: str | None, png: str | None, force: bool, as_json: str | None, **options
) -> None:
    """Can LSTM, GRU and tanh-RNN models remember across d steps, and how fast do their gradients
    vanish?

    Two tasks: recall one symbol across d distractors; copy four symbols in order after d blanks.
    For every cell, distance and seed, a fresh model with the same number of parameters trains
    until it solves the task on held-out sequences (99%) or for twice the budget; the tables show
    how many seeds solved it and the steps it took, and the doubling check says whether the budget
    was enough. Then, on the models that learnt, ||dloss/dh(T-k)|| against k and the forget
    gates of the LSTM that remembers. Uses the GPU when there is one, else one process per core.
    """
    if as_json not in (None, "-"):  # the old --json FILE: --out FILE
        click.echo(
            f"warning: --json FILE is deprecated; use --out {as_json} (--json alone prints JSON to stdout)",
            err=True,
        )
        if out is not None:
            raise click.UsageError("give --out FILE (or the old --json FILE), not both")
        out, as_json = as_json, None
    json_out = out
    import importlib.util

    from charlstm.display.long_range import ExperimentProgress, plot_long_range, print_long_range, print_start
    from charlstm.analysis.experiment import plan, run_experiment, worker_count
    from charlstm.hardware import select_device

    given = _given(options)
    config = ExperimentConfig.quick(**given) if quick else ExperimentConfig(**given)
    check_new_files(force, out=json_out, png=png)
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
    import json

    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_long_range(report)
    if json_out is not None:
        from charlstm.atomic import atomic_write

        atomic_write(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)
    if png is not None and plot_long_range(report, png):
        click.echo(f"wrote {png}", err=True)
