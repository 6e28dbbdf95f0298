"""The command-line interface: a thin Click shell over the library.

Options become config objects, each command makes one library call, and errors become one line
on stderr. torch is imported only inside commands, so ``charlstm --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time

import click

from charlstm import __version__
from charlstm.config import ModelConfig, SampleConfig, TrainConfig
from charlstm.errors import CharlstmError, ConfigError

EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


class _UsageProblem(click.ClickException):
    """An option value out of range: one line on stderr, exit 2 (a usage error)."""

    exit_code = 2


class _Group(click.Group):
    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Click's main, but every error is one line on stderr (no usage dump, no traceback)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as e:
            message = e.format_message()
            if isinstance(e, click.UsageError) and e.ctx is not None:
                message += f" (see '{e.ctx.command_path} --help')"
            click.echo(f"Error: {message}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            raise _UsageProblem(str(e)) from None
        except CharlstmError as e:
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("\ninterrupted", err=True)
            ctx.exit(130)


def _default(cls, name: str):
    return {f.name: f for f in dataclasses.fields(cls)}[name].default


def _build(cls, **options):
    """A config object from the options the user gave; the dataclass supplies the rest."""
    return cls(**{k: v for k, v in options.items() if v is not None})


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="charlstm")
def cli() -> None:
    """Train LSTM language models on your own text, generate text from them, and measure them.

    \b
      charlstm train my_text.txt          train (no FILE: the built-in corpus)
      charlstm sample checkpoints/my_text generate text from the best checkpoint
      charlstm eval checkpoints/my_text held_out.txt
    """


# ---------------------------------------------------------------------------------------- train

_MODEL_FIELDS = ("cell", "embedding_dim", "hidden_size", "num_layers", "dropout", "tie_weights")


def _opt(cls, name: str, help: str, **kwargs):
    default = _default(cls, name)
    shown = "none" if default is None else repr(default) if isinstance(default, str) else default
    return click.option(
        "--" + name.replace("_", "-"), name, default=None, help=f"{help}  [default: {shown}]", **kwargs
    )


@cli.command()
@click.argument("file", required=False, type=click.Path())
@click.option(
    "--out", type=click.Path(file_okay=False), help="Run directory  [default: checkpoints/<file stem>]"
)
@click.option(
    "--resume",
    type=click.Path(),
    help="Continue the run in this directory exactly where it stopped (FILE defaults to its text).",
)
@_opt(TrainConfig, "tokenizer", "Token unit.", type=click.Choice(["char", "byte", "bpe", "unigram"]))
@_opt(TrainConfig, "vocab_size", "Vocabulary size for bpe/unigram.", type=int)
@_opt(TrainConfig, "val_fraction", "Last fraction of the text held out for validation.", type=float)
@_opt(
    ModelConfig,
    "cell",
    "Recurrent cell: LSTM, or GRU / tanh RNN for comparison.",
    type=click.Choice(["lstm", "gru", "rnn"]),
)
@_opt(ModelConfig, "embedding_dim", "Embedding size.", type=int)
@_opt(ModelConfig, "hidden_size", "LSTM units per layer.", type=int)
@_opt(ModelConfig, "num_layers", "Stacked LSTM layers.", type=int)
@_opt(ModelConfig, "dropout", "Dropout between layers and before the projection.", type=float)
@click.option(
    "--tie-weights/--no-tie-weights",
    default=None,
    help="Share embedding and projection weights (needs --embedding-dim = --hidden-size).",
)
@_opt(TrainConfig, "batch_size", "Parallel streams per step.", type=int)
@_opt(TrainConfig, "bptt", "Window length: steps of backpropagation through time.", type=int)
@_opt(TrainConfig, "lr", "Peak learning rate (AdamW).", type=float)
@_opt(TrainConfig, "lr_schedule", "Learning-rate schedule.", type=click.Choice(["cosine", "constant"]))
@_opt(TrainConfig, "warmup_steps", "Linear warm-up steps.", type=int)
@_opt(TrainConfig, "weight_decay", "AdamW weight decay (weight matrices only).", type=float)
@_opt(TrainConfig, "clip", "Gradient-norm clipping threshold.", type=float)
@_opt(TrainConfig, "epochs", "Stop after this many passes over the text...", type=int)
@_opt(TrainConfig, "max_steps", "...or this many steps...", type=int)
@_opt(TrainConfig, "max_time", "...or this many seconds, whichever comes first.", type=float)
@_opt(TrainConfig, "eval_every", "Validate and checkpoint every N steps (and at the end).", type=int)
@_opt(TrainConfig, "eval_tokens", "Validate on at most this many held-out tokens.", type=int)
@_opt(TrainConfig, "seed", "Random seed (a CPU run with the same seed repeats exactly).", type=int)
@_opt(TrainConfig, "device", "Where to train.", type=click.Choice(["auto", "cpu", "cuda", "mps"]))
@_opt(
    TrainConfig,
    "precision",
    "auto: bf16 autocast where the hardware runs it fast, fp16 on older GPUs, else fp32.",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
)
@_opt(
    TrainConfig,
    "encoding_errors",
    "Invalid UTF-8: stop with its byte offset, or replace it with U+FFFD (counted).",
    type=click.Choice(["strict", "replace"]),
)
def train(file: str | None, out: str | None, resume: str | None, **options) -> None:
    """Train a model on FILE (a UTF-8 text file; default: the built-in corpus).

    Line ends are kept as they are (CRLF text is learnt, sampled and measured with its CRs).
    """
    given = {k: v for k, v in options.items() if v is not None}
    model_options = {k: given.pop(k) for k in _MODEL_FIELDS if k in given}
    if resume is not None:
        if out is not None:
            raise click.UsageError("--out cannot be used with --resume: a resumed run stays in its directory")
        from charlstm.train import resume as resume_training

        source = None if file is None else _text_source(file, given.get("encoding_errors", "strict"))
        with _TrainProgress() as progress:
            result = resume_training(resume, source, {**given, **model_options}, events=progress)
    else:
        config = _build(TrainConfig, **given)
        ModelConfig(vocab_size=2, **model_options)  # report bad model options before any work
        from charlstm.train import train as run_training

        source = _text_source(file, config.encoding_errors)
        with _TrainProgress() as progress:
            result = run_training(source, config, model_options, out=out, events=progress)
    if result.stopped_by in EXIT_SIGNAL:
        if _is_main_process():
            click.echo(
                f"stopped by {result.stopped_by}: checkpoint saved to {result.last_path}; "
                f"continue with: charlstm train --resume {result.run_dir}; "
                f"try it with: charlstm sample {result.run_dir}",
                err=True,
            )
        sys.exit(EXIT_SIGNAL[result.stopped_by])


def _is_main_process() -> bool:
    """False in the torchrun processes other than rank 0: they train but print nothing."""
    import os

    return os.environ.get("RANK", "0") == "0"


def _text_source(file: str | None, encoding_errors: str = "strict"):
    from charlstm.corpus import BUILTIN_NAME, TextSource

    if file is None:
        if _is_main_process():
            click.echo(f"No FILE given: training on the built-in corpus, {BUILTIN_NAME}.", err=True)
        return TextSource.builtin()
    return TextSource.from_file(file, encoding_errors)


class _TrainProgress:
    """Progress bar during training and a summary table at the end, all on stderr."""

    def __init__(self) -> None:
        self.console = _stderr_console()
        self.bar = None
        self.val_loss = math.nan
        self.last_update = 0.0
        self.info: dict = {}

    def __enter__(self) -> _TrainProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:  # an error ends the bar's line before its message is printed
            self.bar.close()
            self.bar = None

    def on_start(self, info: dict) -> None:
        from tqdm import tqdm

        self.info = info
        self.console.print(
            f"run directory [bold]{info['run_dir']}[/]  device {info['device']}, {info['precision']}\n"
            f"tokenizer {info['tokenizer']} (vocabulary {info['vocab_size']:,})\n"
            f"model {info['num_parameters']:,} parameters  "
            f"tokens {info['train_tokens']:,} train / {info['val_tokens']:,} validation"
            + (
                f" (scored: the first {info['val_tokens_scored']:,})"
                if info["val_tokens_scored"] < info["val_tokens"]
                else ""
            )
            + f"  {info['steps_per_epoch']:,} steps per epoch"
        )
        if info.get("world_size", 1) > 1:
            self.console.print(
                f"data parallel: {info['world_size']} processes ({info['backend']}) x batch "
                f"{info['global_batch'] // info['world_size']} = global batch {info['global_batch']} streams"
            )
        if info.get("replacements"):
            self.console.print(f"invalid UTF-8: {info['replacements']:,} byte sequences replaced by U+FFFD")
        if info.get("resumed_from_step") is not None:
            self.console.print(f"resuming from step {info['resumed_from_step']:,} ({info['token_cache']})")
        self.bar = tqdm(
            total=info["planned_steps"],
            initial=info.get("resumed_from_step") or 0,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_update < 0.5:
            return
        self.last_update = now
        eta = (self.info["planned_steps"] - step) * elapsed / step
        if self.info.get("max_time"):
            eta = min(eta, max(0.0, self.info["max_time"] - elapsed))
        val = f"{self.val_loss:.3f}" if math.isfinite(self.val_loss) else "-"  # none measured yet
        self.bar.set_postfix_str(
            f"loss {float(train_loss):.3f}, val {val}, {tokens_per_s:,.0f} tok/s, ETA {_duration(eta)}",
            refresh=False,
        )

    def on_eval(self, record: dict) -> None:
        self.val_loss = record["val_loss"]

    def on_end(self, result) -> None:
        from rich.table import Table

        if self.bar is not None:
            self.bar.close()
            self.bar = None
        table = Table(title="charlstm train", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "steps", f"{result.steps:,} ({result.epochs_done:.2f} epochs, stopped by {result.stopped_by})"
        )
        table.add_row("time", _duration(result.elapsed))
        table.add_row("tokens/s", f"{result.tokens_per_s:,.0f}")
        table.add_row("parameters", f"{result.num_parameters:,}")
        unit = "char" if self.info.get("tokenizer") == "char" else "token"
        if math.isfinite(result.best_val_loss):
            best = result.best_val_loss
            table.add_row(
                "best validation loss", f"{best:.4f} nats/{unit} = {best / math.log(2):.4f} bits/{unit}"
            )
            table.add_row("last validation loss", f"{result.last_val_loss:.4f} nats/{unit}")
            table.add_row("best checkpoint", str(result.best_path))
        else:
            table.add_row("validation loss", "not measured yet")
        table.add_row("last checkpoint", str(result.last_path))
        if result.metrics:
            table.add_row("metrics", str(result.run_dir / "metrics.jsonl"))
        self.console.print(table)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


# --------------------------------------------------------------------------------------- sample


@cli.command()
@click.argument("checkpoint", type=click.Path())
@_opt(SampleConfig, "prime", "Text to start from (written out first).", type=str)
@_opt(SampleConfig, "length", "Characters of new text per sample.", type=int)
@_opt(SampleConfig, "temperature", "Sampling temperature; 0 is greedy.", type=float)
@_opt(SampleConfig, "top_k", "Sample only from the K most likely tokens.", type=int)
@_opt(SampleConfig, "top_p", "Sample only from the most likely tokens making up probability P.", type=float)
@_opt(SampleConfig, "num_samples", "Samples generated together as one batch.", type=int)
@_opt(SampleConfig, "seed", "Random seed.", type=int)
@_opt(SampleConfig, "stop", "End a sample where this string appears (it is not written).", type=str)
@_opt(SampleConfig, "device", "Where to run.", type=click.Choice(["auto", "cpu", "cuda", "mps"]))
@click.option(
    "--echo-prime/--no-echo-prime",
    default=True,
    show_default=True,
    help="Write the prime before the new text.",
)
def sample(checkpoint: str, echo_prime: bool, **options) -> None:
    """Generate text from CHECKPOINT (a run directory or a .pt file).

    Only the text goes to stdout; several samples are separated by a blank line.
    """
    _write_samples(checkpoint, _build(SampleConfig, **options), echo_prime)


def _write_samples(checkpoint: str, config: SampleConfig, echo_prime: bool) -> None:
    """Stream the first sample to stdout as it is generated; the others follow when done."""
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.model import select_device
    from charlstm.sampling import encode_prime, generate

    device = select_device(config.device)
    payload = load_checkpoint(checkpoint)
    model, tokenizer = model_from_checkpoint(payload, device, checkpoint)
    encode_prime(tokenizer, config.prime)  # a bad prime fails before anything is written

    out = sys.stdout
    held = [[] for _ in range(config.num_samples)]
    if echo_prime:
        out.write(config.prime)
    for pieces in generate(model, tokenizer, config, device):
        if pieces[0]:
            out.write(pieces[0])
            out.flush()
        for buffer, piece in zip(held[1:], pieces[1:]):
            buffer.append(piece)
    for buffer in held[1:]:
        out.write("\n\n")
        out.write((config.prime if echo_prime else "") + "".join(buffer))
    out.write("\n")
    out.flush()


# ----------------------------------------------------------------------------------------- eval


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--batch-size", default=64, show_default=True, help="Parallel streams.")
@click.option("--bptt", default=None, type=int, help="Window length  [default: the checkpoint's]")
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"])
)
@click.option(
    "--encoding-errors",
    default="strict",
    show_default=True,
    type=click.Choice(["strict", "replace"]),
    help="Invalid UTF-8: stop with its byte offset, or replace it with U+FFFD (counted).",
)
def eval_(
    checkpoint: str,
    file: str,
    as_json: bool,
    batch_size: int,
    bptt: int | None,
    device: str,
    encoding_errors: str,
) -> None:
    """Measure CHECKPOINT on FILE: loss, perplexity, bits per character and per byte."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if bptt is not None and bptt < 1:
        raise ConfigError(f"--bptt must be at least 1 (got {bptt})")
    from charlstm.corpus import TextSource

    source = TextSource.from_file(file, encoding_errors)
    _evaluate(checkpoint, source, as_json, batch_size, bptt, device)


def _evaluate(checkpoint: str, source, as_json: bool, batch_size: int, bptt: int | None, device: str):
    """Evaluate on ``source`` (read after the checkpoint is checked)."""
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.evaluate import evaluate_source
    from charlstm.model import select_device

    torch_device = select_device(device)
    payload = load_checkpoint(checkpoint)
    model, tokenizer = model_from_checkpoint(payload, torch_device, checkpoint)
    bptt = bptt or payload.get("train_config", {}).get("bptt", 128)
    report = evaluate_source(model, tokenizer, source, batch_size, bptt, torch_device)
    name = source.name
    if as_json:
        import json

        click.echo(json.dumps(report.to_dict()))
    else:
        _print_report(report, name)


def _print_report(report, file: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="charlstm eval", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("text", file)
    table.add_row("tokens", f"{report.tokens:,}")
    table.add_row("characters", f"{report.chars:,}")
    table.add_row("bytes", f"{report.bytes:,}")
    table.add_row("loss (nats/token)", f"{report.loss:.4f}")
    table.add_row("perplexity (per token)", f"{report.perplexity:.3f}")
    table.add_row("bits per character", f"{report.bits_per_char:.4f}")
    table.add_row("bits per byte", f"{report.bits_per_byte:.4f}")
    table.add_row("unknown characters", f"{report.unknown:,}")
    if report.replacements:
        table.add_row("invalid UTF-8 replaced", f"{report.replacements:,}")
    Console(highlight=False).print(table)


# -------------------------------------------------------------------------------------- inspect

_QUANTITY_CHOICES = ["cell", "hidden", "forget", "input", "output", "candidate", "update", "reset"]


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("file", required=False, type=click.Path())
@click.option("--text", help="The text to run the model over (instead of FILE).")
@click.option(
    "--max-chars", default=2000, show_default=True, type=click.IntRange(1), help="Read this much of FILE."
)
@click.option(
    "--show",
    "quantity",
    type=click.Choice(_QUANTITY_CHOICES),
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

    payload = load_checkpoint(checkpoint)
    model, tokenizer = model_from_checkpoint(payload, "cpu", checkpoint)
    config = model.config
    from charlstm.cells import QUANTITIES

    problems = []
    if quantity is not None and quantity not in QUANTITIES[config.cell]:
        problems.append(f"--show {quantity}: a {config.cell} has {', '.join(QUANTITIES[config.cell])}")
    if layer is not None and layer > config.num_layers:
        problems.append(f"--layer {layer}: the model has {config.num_layers} layers")
    if unit is not None and unit >= config.hidden_size:
        problems.append(f"--unit {unit}: layers have units 0-{config.hidden_size - 1}")
    if problems:
        raise ConfigError("; ".join(problems))
    if text is None:
        from charlstm.corpus import TextSource

        text = ""
        for chunk in TextSource.from_file(file).chunks():
            text += chunk[: max_chars - len(text)]
            if len(text) >= max_chars:
                break
    if tokenizer.kind == "char":
        unknown = tokenizer.unknown_chars(text)
        if unknown:
            click.echo(
                f"note: {len(unknown)} characters not in the model's vocabulary are read as unknown", err=True
            )
    n_tokens = len(tokenizer.encode(text))
    if n_tokens < 2:
        raise CharlstmError("the text is too short to inspect: give at least 2 tokens")
    if at is not None and at >= n_tokens:
        raise ConfigError(f"--at {at}: the text has tokens 0-{n_tokens - 1}")

    from charlstm.inspection import inspect_text, to_html

    report = inspect_text(model, tokenizer, text, quantity, None if layer is None else layer - 1, unit, at)
    _print_inspection(report, config)
    if html_out is not None:
        import os

        tmp = Path(html_out).with_name(".tmp-" + Path(html_out).name)
        tmp.write_text(to_html(report, f"charlstm inspect {checkpoint}"), encoding="utf-8")
        os.replace(tmp, html_out)
        click.echo(f"wrote {html_out}", err=True)


def _print_inspection(report, config) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from charlstm.inspection import OPEN, SHUT, colour, describe_saturation, scale_of, visible

    console = Console(highlight=False)
    console.print(
        f"[bold]{config.cell.upper()}[/], {config.num_layers} x {config.hidden_size}, "
        f"{len(report.pieces):,} tokens. Background: the unit's value after each character "
        "(red positive, blue negative, white zero)."
    )
    for unit in report.units:
        scale = scale_of(unit.values)
        line = Text()
        for piece, value in zip(report.pieces, unit.values.tolist()):
            r, g, b = colour(value, scale)
            line.append(visible(piece), style=f"black on rgb({r},{g},{b})")
        console.rule(unit.label)
        console.print(line)
    if report.skipped_features:
        console.print(f"not searched (constant in this text): {', '.join(report.skipped_features)}")
    if report.gate_stats:
        table = Table(title="gate saturation", title_justify="left")
        for column in (
            "layer",
            "gate",
            f"open > {OPEN}",
            f"shut < {SHUT}",
            "units mostly open",
            "units mostly shut",
        ):
            table.add_column(column, justify="right")
        for s in report.gate_stats:
            table.add_row(
                str(s.layer + 1),
                s.gate,
                f"{s.open_fraction:.1%}",
                f"{s.shut_fraction:.1%}",
                f"{s.units_mostly_open}/{s.units}",
                f"{s.units_mostly_shut}/{s.units}",
            )
        console.print(table)
        if sentence := describe_saturation(report.gate_stats):
            console.print(sentence)
    p = report.prediction
    table = Table()
    table.add_column("token")
    table.add_column("probability", justify="right")
    for piece, prob in p.top:
        table.add_row(repr(piece), f"{prob:.3f}")
    console.print(f"top {len(p.top)} next tokens after token {p.position}:")
    console.print(Text("..." + visible(p.context[-60:])))
    console.print(table)
    if p.actual is not None:
        console.print(f"the text goes on with {p.actual!r}")


# ----------------------------------------------------------------------------------- experiment


@cli.group()
def experiment() -> None:
    """Experiments on how recurrent cells behave (see the README's long-range section)."""


@experiment.command("long-range")
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
    import dataclasses
    from pathlib import Path

    from charlstm.experiment import ExperimentConfig, plot, run_long_range

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
    console = _stderr_console()
    console.print(
        f"long-range recall: distances {', '.join(map(str, config.distances))}; {config.steps} steps "
        f"of batch {config.batch_size} per model; chance = {1 / config.num_symbols:.1%}"
    )
    report = run_long_range(config, progress=lambda message: console.print("  " + message))
    _print_long_range(report)
    if json_out is not None:
        import json

        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {json_out}", err=True)
    if png is not None:
        if plot(report, png):
            click.echo(f"wrote {png}", err=True)
        else:
            click.echo(
                f"--png {png}: matplotlib is not installed (pip install matplotlib); tables only", err=True
            )


def _print_long_range(report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    config = report.config
    table = Table(title="recall accuracy by distance d (held-out sequences)", title_justify="left")
    table.add_column("model")
    table.add_column("hidden", justify="right")
    table.add_column("parameters", justify="right")
    for d in config.distances:
        table.add_column(f"d={d}", justify="right")
    for label, _, _ in config.variants():
        rows = [r for r in report.results if r.model == label]
        table.add_row(
            label,
            str(rows[0].hidden_size),
            f"{rows[0].parameters:,}",
            *(f"{report.accuracy(label, d):.0%}" for d in config.distances),
        )
    console.print(table)
    ks = sorted({k for norms in report.gradient_norms.values() for k, _ in norms})
    table = Table(
        title=f"mean ||dloss/dh(T-k)||: models trained at d={report.gradient_trained_at}, "
        f"sequences of d={report.gradient_distance}",
        title_justify="left",
    )
    table.add_column("k", justify="right")
    by_label = {label: dict(norms) for label, norms in report.gradient_norms.items()}
    for label in by_label:
        table.add_column(label.replace("LSTM, forget bias", "LSTM fb"), justify="right")
    for k in ks:
        table.add_row(str(k), *(f"{norms[k]:.1e}" if k in norms else "" for norms in by_label.values()))
    console.print(table)


# ----------------------------------------------------------------------------------------- demo


@cli.command()
@click.option("--max-time", default=120.0, show_default=True, help="Seconds of training.")
@click.option(
    "--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"])
)
def demo(max_time: float, device: str) -> None:
    """Train on the built-in corpus for a couple of minutes, then sample and evaluate.

    The same as `charlstm train --max-time 120`, then `charlstm sample` and `charlstm eval` on
    the held-out last tenth of the built-in corpus.
    """
    config = TrainConfig(max_time=max_time, device=device)
    from charlstm.corpus import TextSource, builtin_text, split_train_val
    from charlstm.train import train as run_training

    with _TrainProgress() as progress:
        result = run_training(_text_source(None), config, {}, events=progress)
    if result.stopped_by in EXIT_SIGNAL:
        sys.exit(EXIT_SIGNAL[result.stopped_by])
    console = _stderr_console()
    console.rule(f"charlstm sample {result.run_dir} --prime 'The ' --length 400")
    _write_samples(str(result.run_dir), SampleConfig(prime="The ", length=400, seed=0, device=device), True)
    held_out = split_train_val(builtin_text(), config.val_fraction)[1]  # the split training used
    console.rule("evaluation on the held-out last tenth of the built-in corpus")
    source = TextSource.from_text(held_out, "built-in corpus, held-out tenth")
    _evaluate(str(result.run_dir), source, False, 64, None, device)
    console.print(
        "Next: [bold]charlstm train your_text.txt[/], then "
        f"[bold]charlstm sample {result.run_dir.parent}/your_text[/] (see charlstm --help)."
    )


def main() -> None:
    cli(prog_name="charlstm")


if __name__ == "__main__":
    main()
