"""The command-line interface: Click commands and the option decorators they share.

Each command turns its options into a config object, makes one library call and hands the
result to ``charlstm.display``; errors become one line on stderr. Options are built from the
config dataclasses' fields (flag, default, help and choices are written once, in ``config.py``).
torch is imported only inside commands, so ``charlstm --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import sys

import click

from charlstm import __version__
from charlstm.config import (
    DEVICES,
    SHOW_CHOICES,
    EvalConfig,
    ModelShape,
    SampleConfig,
    TrainConfig,
    flag,
)
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


# ------------------------------------------------------------------------------ shared options


def config_option(cls, name: str, **kwargs):
    """The option for field ``name`` of config class ``cls``: its flag, help, choices and shown
    default come from the field. The value is None unless given, so the dataclass supplies the
    default and a resumed run can tell what the user asked to change."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    help_text = f.metadata.get("help", "")
    if "[default" not in help_text:
        shown = "none" if f.default is None else repr(f.default) if isinstance(f.default, str) else f.default
        help_text += f"  [default: {shown}]"
    if f.metadata.get("choices"):
        kwargs["type"] = click.Choice(f.metadata["choices"])
    if f.type in ("bool", bool):
        return click.option(f"{flag(name)}/--no-{flag(name)[2:]}", name, default=None, help=help_text)
    return click.option(flag(name), name, default=None, help=help_text, **kwargs)


def _load_config_file(ctx: click.Context, param: click.Parameter, value: str | None):
    """``--config FILE``: the command's table of a TOML file becomes Click's ``default_map``, so
    the command line and ``CHARLSTM_<COMMAND>_<OPTION>`` variables win over it and it wins over
    the defaults. Keys are named as the flags (``hidden-size`` or ``hidden_size``); a key that is
    not an option of the command is an error naming it."""
    if value is None:
        return None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(value, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"--config {value}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {value}: not valid TOML ({e})") from None
    name = ctx.info_name
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--config {value}: [{name}] must be a table of options")
    options = {}
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.name != "config":
            for opt in p.opts:
                if opt.startswith("--"):
                    options[opt[2:]] = options[opt[2:].replace("-", "_")] = p.name
    unknown = [key for key in table if key not in options]
    if unknown:
        raise ConfigError(
            f"--config {value}: [{name}] {', '.join(unknown)}: not an option of "
            f"charlstm {ctx.command_path.split(' ', 1)[-1]} "
            "(keys are named as the flags, without the leading --)"
        )
    ctx.default_map = {**(ctx.default_map or {}), **{options[k]: v for k, v in table.items()}}
    return value


def config_file_option(function):
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        is_eager=True,
        expose_value=False,
        callback=_load_config_file,
        help="Take option values from this TOML file's [command] table (the command line and "
        "CHARLSTM_* variables win over it).",
    )(function)


def device_option(function):
    return click.option(
        "--device", default="auto", show_default=True, type=click.Choice(DEVICES), help="Where to run."
    )(function)


def json_option(function):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


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
    from charlstm.text import BUILTIN_NAME, TextSource

    files = (files,) if isinstance(files, str) else tuple(files or ())
    if not files:
        if val_files:
            raise click.UsageError("--val-files needs FILE arguments to train on")
        if is_main_process():
            click.echo(f"No FILE given: training on the built-in corpus, {BUILTIN_NAME}.", err=True)
        return TextSource.builtin()
    from charlstm.corpus import Corpus, is_pattern, unescape

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
                click.echo(f"skipped {len(skipped)} bad file(s) of {len(skipped) + len(corpus.paths)}", err=True)
    return corpus


@click.group(
    cls=_Group,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        # CHARLSTM_TRAIN_HIDDEN_SIZE=512 is --hidden-size 512 for charlstm train
        "auto_envvar_prefix": "CHARLSTM",
    },
)
@click.version_option(__version__, prog_name="charlstm")
def cli() -> None:
    """Train LSTM language models on your own text, generate text from them, and measure them.

    \b
      charlstm train my_text.txt          train (no FILE: the built-in corpus)
      charlstm train a.txt notes/ 'poems/**/*.md'   train on many files
      charlstm train new.txt --init-from checkpoints/my_text   fine-tune
      charlstm sample checkpoints/my_text generate text from the best checkpoint
      charlstm eval checkpoints/my_text held_out.txt
      charlstm info checkpoints/*         what each run did (or is doing)
      charlstm plot checkpoints/a checkpoints/b --out curves.png

    Every command takes --config FILE.toml; CHARLSTM_TRAIN_HIDDEN_SIZE=512 sets --hidden-size.
    """


# ---------------------------------------------------------------------------------------- train


def _train_options(function):
    """One option per ``TrainConfig`` and ``ModelShape`` field, in the order ``--help`` shows."""
    names = [(TrainConfig, n) for n in ("tokenizer", "vocab_size", "val_fraction")]
    names += [(ModelShape, n) for n in ModelShape.field_names()]
    names += [(TrainConfig, n) for n in TrainConfig.field_names() if n not in ("tokenizer", "vocab_size", "val_fraction")]
    types = {"int": int, "int | None": int, "float": float, "float | None": float}
    fields = {**{f.name: f for f in dataclasses.fields(TrainConfig)}, **{f.name: f for f in dataclasses.fields(ModelShape)}}
    for cls, name in reversed(names):
        kind = types.get(str(fields[name].type))
        function = config_option(cls, name, **({"type": kind} if kind else {}))(function)
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
            raise click.UsageError("--init-from cannot be used with --resume: a resumed run goes on from its own weights")
        from charlstm.train import resume as resume_training

        source = None if not files else _text_source(files, given.get("encoding_errors", "strict"), *corpus_options)
        with TrainProgress() as progress:
            result = resume_training(resume, source, given, events=progress, command=_command_line())
    else:
        config = TrainConfig.from_dict(given)
        shape = ModelShape.from_dict(given)  # bad model options are reported before any work
        init = None
        if init_from is not None:
            from charlstm.finetune import plan_init

            init = plan_init(init_from, given, strict_vocab)
            config = TrainConfig.from_dict({**given, **init.train_settings})
            shape = init.shape
        elif strict_vocab:
            raise click.UsageError("--strict-vocab goes with --init-from")
        from charlstm.train import train as run_training

        source = _text_source(files, config.encoding_errors, *corpus_options)
        with TrainProgress() as progress:
            result = run_training(source, config, shape, out=out, events=progress, init=init, command=_command_line())
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


# --------------------------------------------------------------------------------------- sample


def _sample_options(*names: str):
    """The ``SampleConfig`` options ``names``, in that order (see ``config_option``)."""
    types = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str, "str | None": str}
    fields = {f.name: f for f in dataclasses.fields(SampleConfig)}

    def decorate(function):
        for name in reversed(names):
            kind = types.get(str(fields[name].type))
            function = config_option(SampleConfig, name, **({"type": kind} if kind else {}))(function)
        return function

    return decorate


_GENERATION = ("length", "top_k", "top_p", "min_p", "repetition_penalty", "repetition_window", "no_repeat_ngram")


@cli.command()
@config_file_option
@click.argument("checkpoint", type=click.Path())
@config_option(SampleConfig, "prime", type=str)
@click.option(
    "--prime-file", type=click.Path(dir_okay=False), help="Start from the text of this file (newlines kept)."
)
@click.option(
    "--temperature",
    "temperatures",
    type=float,
    multiple=True,
    help="Sampling temperature; 0 is greedy. Give it several times to compare, one sample set per "
    "value, all with the same seed  [default: 0.8]",
)
@_sample_options(*_GENERATION, "beam_width", "num_samples", "seed", "stop", "device")
@click.option(
    "--echo-prime/--no-echo-prime",
    default=True,
    show_default=True,
    help="Write the prime before the new text.",
)
@click.option("--output", type=click.Path(dir_okay=False), help="Write the samples to this file, not stdout.")
@click.option("--force", is_flag=True, help="Let --output replace a file that exists.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON line per sample: text, prime, settings, the seed used, tokens, mean log-probability.",
)
def sample(checkpoint: str, prime_file, temperatures, echo_prime: bool, output, force, as_json, **options) -> None:
    """Generate text from CHECKPOINT (a run directory or a .pt file).

    Only the text goes to stdout (or --output); several samples are separated by a blank line.
    Filters apply in this order: --repetition-penalty, --no-repeat-ngram, --temperature, --top-k,
    --top-p, --min-p. `--prime -` reads the prime from stdin.
    """
    from pathlib import Path

    given = _given(options)
    given["prime"] = _read_prime(given.get("prime"), prime_file)
    configs = [SampleConfig.from_dict({**given, "temperature": t}) for t in temperatures]
    configs = configs or [SampleConfig.from_dict(given)]
    if output is not None and Path(output).exists() and not force:
        raise CharlstmError(f"--output {output}: already exists; pass --force to replace it")
    from charlstm.samples import write_samples

    if output is None:
        write_samples(checkpoint, configs, echo_prime, as_json, sys.stdout)
        return
    import io

    from charlstm.atomic import atomic_write

    def write(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        write_samples(checkpoint, configs, echo_prime, as_json, text)
        text.flush()
        text.detach()

    atomic_write(output, write)
    click.echo(f"wrote {output}", err=True)


def _read_prime(prime: str | None, prime_file: str | None) -> str:
    """The prime from --prime TEXT, --prime - (stdin) or --prime-file FILE (newlines kept)."""
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    if prime_file is not None:
        from charlstm.text import TextSource

        return TextSource.from_file(prime_file).read()
    if prime == "-":
        return sys.stdin.read()
    return prime or ""


# ----------------------------------------------------------------------------------------- chat

_CHAT_HELP = """commands (a line starting with / ; anything else is text to continue):
  /temperature T  /length N  /top-k K|off  /top-p P|off  /min-p P|off  /seed N
  /repetition-penalty R  /repetition-window N  /no-repeat-ngram N|off
  /top [N]      the N most likely next tokens (default 10) with their probabilities
  /reset        forget the text so far
  /settings     show the settings
  /help, /quit  (Ctrl-C stops a reply, Ctrl-D leaves)"""


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--temperature", type=float, default=None, help="Sampling temperature; 0 is greedy.  [default: 0.8]")
@_sample_options("length", "top_k", "top_p", "min_p", "repetition_penalty", "repetition_window", "no_repeat_ngram", "seed", "device")
def chat(checkpoint: str, **options) -> None:
    """Write with a model, turn by turn: each line you type is continued, and the text goes on
    where it left off (the model keeps its state between turns) until /reset.

    A separate command, not `sample --interactive`: it is a loop with its own commands and state,
    while `sample` stays a one-shot command for pipes and scripts. When stdin is not a terminal,
    each line read is answered in turn (no prompt), so it can be scripted. Type /help for the
    commands.
    """
    from charlstm.chat import ChatSession
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.hardware import select_device

    config = SampleConfig.from_dict({"length": 200, **_given(options)})
    device = select_device(config.device)
    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint), device, checkpoint)
    session = ChatSession(model, tokenizer, config, device)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        click.echo(f"charlstm chat {checkpoint} (seed {session.config.seed}); /help for commands, Ctrl-D to leave", err=True)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            click.echo("", err=True)
            continue
        if line.startswith("/"):
            if not _chat_command(session, line):
                break
            continue
        try:
            for piece in session.reply(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass  # the reply stops here; the text so far is kept
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    if interactive:
        click.echo("", err=True)


def _chat_command(session, line: str) -> bool:
    """Carry out a /command; False to leave the loop."""
    name, _, value = line[1:].strip().partition(" ")
    value = value.strip()
    if name in ("quit", "exit", "q"):
        return False
    if name == "help":
        click.echo(_CHAT_HELP, err=True)
    elif name == "reset":
        session.reset()
        click.echo("(the text so far is forgotten)", err=True)
    elif name == "settings":
        click.echo("  ".join(f"{k} {v}" for k, v in session.settings().items()), err=True)
    elif name == "top":
        try:
            k = int(value) if value else 10
        except ValueError:
            click.echo(f"error: /top {value}: give a whole number", err=True)
            return True
        for piece, prob in session.top_next(max(1, k)):
            click.echo(f"{prob:8.4f}  {piece!r}")
    else:
        try:
            session.set(name, value)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
    return True


# ---------------------------------------------------------------------------------------- score


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--file", "file", type=click.Path(dir_okay=False), help="Read the lines from FILE  [default: stdin]")
@json_option
@device_option
def score(checkpoint: str, file: str | None, as_json: bool, device: str) -> None:
    """Score each line of the input under the model: its log-probability (nats) and bits per
    character, to rank candidates or find unusual lines. Each line is scored on its own, from the
    start of a text; blank lines are kept (no tokens, no score)."""
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.hardware import select_device
    from charlstm.score import score_lines
    from charlstm.text import TextSource

    torch_device = select_device(device)
    model, tokenizer = model_from_checkpoint(load_checkpoint(checkpoint), torch_device, checkpoint)
    text = TextSource.from_file(file).read() if file is not None else sys.stdin.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line does not start another
    results = score_lines(model, tokenizer, [line.rstrip("\r") for line in lines], torch_device)
    from charlstm.display import print_scores

    print_scores(results, as_json)


# ----------------------------------------------------------------------------------------- eval


@cli.command(name="eval")
@config_file_option
@click.argument("checkpoint", type=click.Path())
@click.argument("file", type=click.Path())
@json_option
@click.option("--batch-size", default=64, show_default=True, type=int, help="Parallel streams.")
@click.option("--bptt", default=None, type=int, help="Window length  [default: the checkpoint's]")
@device_option
@click.option(
    "--encoding-errors",
    default="strict",
    show_default=True,
    type=click.Choice(EvalConfig.__dataclass_fields__["encoding_errors"].metadata["choices"]),
    help=EvalConfig.__dataclass_fields__["encoding_errors"].metadata["help"],
)
def eval_(checkpoint: str, file: str, as_json: bool, **options) -> None:
    """Measure CHECKPOINT on FILE: loss, perplexity, bits per character and per byte."""
    from charlstm.text import TextSource

    config = EvalConfig(**options)
    _evaluate(checkpoint, TextSource.from_file(file, config.encoding_errors), config, as_json)


def _evaluate(checkpoint: str, source, config: EvalConfig, as_json: bool) -> None:
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


# ----------------------------------------------------------------------------------- info, plot


def _summaries(runs: tuple[str, ...]):
    from charlstm.runinfo import read_run

    return [read_run(run) for run in runs]


@cli.command()
@config_file_option
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@json_option
def info(runs: tuple[str, ...], as_json: bool) -> None:
    """One row per run: how it was started, model, tokenizer, data, steps, time, best validation
    loss, status (running, finished and why, killed) and its last sample.

    Works on a finished run, a running one and a killed one (it reads only whole files).
    """
    summaries = _summaries(runs)
    if as_json:
        import json

        click.echo(json.dumps([s.to_dict() for s in summaries], indent=2))
    else:
        from charlstm.display import print_runs

        print_runs(summaries)


@cli.command()
@config_file_option
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), help="Write a PNG here (needs matplotlib).")
def plot(runs: tuple[str, ...], out: str | None) -> None:
    """Loss curves of RUNS: a PNG of training and validation loss against steps and against time
    with --out (needs matplotlib), else a small chart in the terminal."""
    from pathlib import Path

    summaries = _summaries(runs)
    if out is None:
        from charlstm.display import print_curves

        print_curves(summaries)
        return
    if Path(out).exists():
        raise CharlstmError(f"--out {out}: already exists; choose another name or remove it first")
    from charlstm.display import plot_runs

    try:
        plot_runs(summaries, out)
    except ImportError:
        raise CharlstmError(
            "plot --out needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'charlstm[plot]'); without --out the curves are drawn in the terminal"
        ) from None
    click.echo(f"wrote {out}", err=True)


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
    from charlstm.runs import validation_text
    from charlstm.text import TextSource
    from charlstm.train import train as run_training

    config = TrainConfig(max_time=max_time, device=device)
    with TrainProgress() as progress:
        result = run_training(_text_source(None), config, ModelShape(), events=progress)
    _exit_if_stopped_by_signal(result)
    console = stderr_console()
    console.rule(f"charlstm sample {result.run_dir} --prime 'The ' --length 400")
    from charlstm.samples import write_samples

    write_samples(str(result.run_dir), [SampleConfig(prime="The ", length=400, seed=0, device=device)], True, False, sys.stdout)
    console.rule("evaluation on the held-out last tenth of the built-in corpus")
    held_out = TextSource.from_text(validation_text(result.run_dir), "built-in corpus, held-out tenth")
    _evaluate(str(result.run_dir), held_out, EvalConfig(device=device), as_json=False)
    console.print(
        "Next: [bold]charlstm train your_text.txt[/], then "
        f"[bold]charlstm sample {result.run_dir.parent}/your_text[/] (see charlstm --help)."
    )


def main() -> None:
    cli(prog_name="charlstm")


if __name__ == "__main__":
    main()
