"""``charlstm eval``, ``inspect`` and ``experiment``: measuring a model and looking inside it."""

from __future__ import annotations

import dataclasses

import click

from charlstm.cli.base import (
    _given,
    cli,
    config_file_option,
    config_option,
    json_option,
)
from charlstm.config import (
    SHOW_CHOICES,
    EvalConfig,
)
from charlstm.errors import CharlstmError, ConfigError

# ----------------------------------------------------------------------------------------- eval


@cli.command(name="eval")
@config_file_option
@click.argument("checkpoint", type=click.Path())
@click.argument("file", type=click.Path())
@json_option
@config_option(EvalConfig, "batch_size")
@config_option(EvalConfig, "bptt")
@config_option(EvalConfig, "device")
@config_option(EvalConfig, "encoding_errors")
def eval_(checkpoint: str, file: str, as_json: bool, **options) -> None:
    """Measure CHECKPOINT on FILE: loss, perplexity, bits per character and per byte."""
    from charlstm.text import TextSource

    config = EvalConfig.from_dict(_given(options))
    evaluate_and_show(checkpoint, TextSource.from_file(file, config.encoding_errors), config, as_json)


def evaluate_and_show(checkpoint: str, source, config: EvalConfig, as_json: bool) -> None:
    from charlstm.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(checkpoint, source, config)
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict()))
    else:
        from charlstm.display import print_eval_report

        print_eval_report(report, source.name)


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
def inspect(checkpoint, file, text, max_chars, quantity, layer, unit, at, html_out) -> None:
    """See inside a model: activations over a text, interpretable units, gates and predictions.

    \b
      charlstm inspect checkpoints/my_text --text 'He said "yes" (twice).'
      charlstm inspect checkpoints/my_text notes.txt --show forget --layer 2 --unit 17
      charlstm inspect checkpoints/my_text notes.txt --html inside.html
    """
    from pathlib import Path

    if (text is None) == (file is None):
        raise click.UsageError("give FILE or --text (one of them)")
    if html_out is not None and Path(html_out).exists():
        raise CharlstmError(f"--html {html_out}: already exists; choose another name or remove it first")
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.display import inspection_html, print_inspection
    from charlstm.inspection import check_request, inspect_text
    from charlstm.text import TextSource, read_head

    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint), "cpu", checkpoint)
    check_request(model.config, quantity, layer, unit)  # before reading the text
    if text is None:
        text = read_head(TextSource.from_file(file), max_chars)
    report = inspect_text(model, tokenizer, text, quantity, None if layer is None else layer - 1, unit, at)
    print_inspection(report, model.config)
    if html_out is not None:
        from charlstm.atomic import atomic_write

        atomic_write(html_out, inspection_html(report, f"charlstm inspect {checkpoint}"))
        click.echo(f"wrote {html_out}", err=True)


# ----------------------------------------------------------------------------------- experiment


@cli.group()
def experiment() -> None:
    """Experiments on how recurrent cells behave (see the README's long-range section)."""


@experiment.command("long-range")
@config_file_option
@click.option(
    "--quick", is_flag=True, help="Seconds, not minutes: distances 10 and 30, few steps, tiny models."
)
@click.option("--distances", help="Comma-separated distances  [default: 10,30,100,300,1000]")
@click.option("--steps", type=click.IntRange(1), help="Training steps per model  [default: 500]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--png", type=click.Path(dir_okay=False), help="Also plot to this PNG (needs matplotlib).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
def long_range(quick: bool, distances: str | None, steps: int | None, seed: int, png, json_out) -> None:
    """Can LSTM, GRU and tanh-RNN models recall a symbol seen d steps ago? And how fast do their
    gradients vanish with distance?

    Trains one small model per cell and distance (equal parameter budgets, equal steps) on a
    synthetic recall task and reports accuracy per distance, then ||dloss/dh(T-k)|| against k.
    """
    from pathlib import Path

    from charlstm.display import plot_long_range, print_long_range, stderr_console
    from charlstm.experiment import ExperimentConfig, run_long_range

    config = ExperimentConfig.quick() if quick else ExperimentConfig()
    changes: dict = {"seed": seed}
    if distances:
        try:
            changes["distances"] = tuple(sorted({int(d) for d in distances.split(",")}))
        except ValueError:
            raise ConfigError(f"--distances {distances}: give whole numbers separated by commas") from None
        if min(changes["distances"]) < 1:
            raise ConfigError("--distances must be at least 1")
    if steps:
        changes["steps"] = steps
    config = dataclasses.replace(config, **changes)
    for path in (png, json_out):
        if path is not None and Path(path).exists():
            raise CharlstmError(f"{path}: already exists; choose another name or remove it first")
    console = stderr_console()
    console.print(
        f"long-range recall: distances {', '.join(map(str, config.distances))}; {config.steps} steps "
        f"of batch {config.batch_size} per model; chance = {1 / config.num_symbols:.1%}"
    )
    report = run_long_range(config, progress=lambda message: console.print("  " + message))
    print_long_range(report)
    if json_out is not None:
        import json

        from charlstm.atomic import atomic_write

        atomic_write(json_out, json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)
    if png is not None:
        if plot_long_range(report, png):
            click.echo(f"wrote {png}", err=True)
        else:
            click.echo(
                f"--png {png}: matplotlib is not installed (pip install matplotlib); tables only", err=True
            )
