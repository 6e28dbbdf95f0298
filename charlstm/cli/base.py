"""What every command shares: the ``charlstm`` group, its one-line errors and exit codes, and
the option decorators built from the config dataclasses' fields (flag, default, help and choices
are written once, in ``config.py``)."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from charlstm import __version__
from charlstm.config import (
    DEVICES,
    flag,
)
from charlstm.errors import CharlstmError, ConfigError

EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as the shell reports `yes | head` (a `set -o pipefail` script sees it)

# What RUN means, said in every command that takes one (and checked by tests/test_cli_rules.py).
RUN_HELP = "RUN: a run directory, a checkpoint file or an exported folder."


class _UsageProblem(click.ClickException):
    """An option value out of range: one line on stderr, exit 2 (a usage error)."""

    exit_code = 2


class _ReaderGone(Exception):
    """stdout's reader went away (a BrokenPipeError), carried past Click's own EPIPE handling
    (which exits 1) to ``_Group.main``."""


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the text still buffered for a reader that is gone is
    dropped at exit instead of raising again (the recipe of Python's signal module docs)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind stdout (CliRunner)
        pass


class _Group(click.Group):
    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """Click's main, but every error is one line on stderr (no usage dump, no traceback), and
        a reader that goes away (`charlstm sample RUN | head -c 100`) ends the command quietly
        with exit 141, as the shell's own tools end."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
            sys.stdout.flush()  # the last of the output, while a broken pipe can still be caught
        except (_ReaderGone, BrokenPipeError):
            _quiet_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
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
        except KeyboardInterrupt as e:  # training says what the run falls back to, and how to go on
            click.echo("\ninterrupted" + (f": {e}" if str(e) else ""), err=True)
            ctx.exit(130)
        except BrokenPipeError:
            raise _ReaderGone() from None


# ------------------------------------------------------------------------------ shared options


# Config fields' annotations (strings, under ``from __future__ import annotations``) -> Click types.
_TYPES = {"int": int, "int | None": int, "float": float, "float | None": float, "str": str, "str | None": str}


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
    kwargs.setdefault("type", _TYPES.get(str(f.type)))
    if f.type in ("bool", bool):
        return click.option(f"{flag(name)}/--no-{flag(name)[2:]}", name, default=None, help=help_text)
    return click.option(flag(name), name, default=None, help=help_text, **kwargs)


def adapt_options(command):
    """``--adapt-lr``, ``--adapt-decay``, ``--adapt-bptt`` (``eval --adapt``, ``sample --adapt-to``)."""
    from charlstm.config import AdaptConfig

    for name in reversed(AdaptConfig.field_names()):
        command = config_option(AdaptConfig, name)(command)
    return command


def cache_options(command):
    """``--cache-size``, ``--cache-theta``, ``--cache-lambda`` (``eval``, ``score``)."""
    from charlstm.config import CacheConfig

    for name in reversed(CacheConfig.field_names()):
        command = config_option(CacheConfig, name)(command)
    return command


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
    except UnicodeDecodeError:
        raise ConfigError(f"--config {value}: not valid TOML (a TOML file is UTF-8 text)") from None
    name = ctx.info_name
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"--config {value}: [{name}] must be a table of options")
    options, multiple = {}, set()
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.name != "config":
            if p.multiple:
                multiple.add(p.name)
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
    values = {options[k]: v for k, v in table.items()}
    # An option given several times on the command line (--temperature) takes one value or a list.
    values = {k: (v if k not in multiple or isinstance(v, list) else [v]) for k, v in values.items()}
    ctx.default_map = {**(ctx.default_map or {}), **values}
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


def json_option(function=None, *, help: str = "Print JSON to stdout instead of a table."):
    """``--json``: a flag in every command, printing JSON to stdout."""

    def decorate(function):
        return click.option("--json", "as_json", is_flag=True, help=help)(function)

    return decorate if function is None else decorate(function)


def run_argument(function):
    """RUN, the model a command uses (``RUN_HELP`` says what it may be)."""
    return click.argument("run", metavar="RUN", type=click.Path())(function)


def runs_argument(function):
    """RUN..., one or more runs (``info``, ``plot``)."""
    return click.argument("runs", nargs=-1, required=True, metavar="RUN...", type=click.Path())(function)


def out_option(help: str):
    """``--out PATH``, the one option naming the file a command writes (``train``'s --out, a run
    directory, is its own)."""
    return click.option("--out", type=click.Path(), metavar="PATH", help=help)


def force_option(function):
    return click.option(
        "--force", is_flag=True, help="Replace the files --out, --png or --html name if they exist."
    )(function)


def deprecated_option(old: str, instead: str, **kwargs):
    """An old spelling kept for a release: hidden from --help, and one line on stderr when used."""

    def warn(ctx, param, value):
        if value is not None and value != ():
            click.echo(f"warning: {old} is deprecated; {instead}", err=True)
        return value

    return click.option(old, hidden=True, callback=warn, expose_value=True, **kwargs)


def check_new_files(force: bool, folder_ok: bool = False, **paths: str | None) -> None:
    """The one check before a command writes files (``--out``, ``--png``, ``--html``, given by
    option name): each must be new unless ``force``, not a directory (unless ``folder_ok``: a
    command that writes a folder), in a directory that exists, and no two the same file. Done
    before any work, so nothing is computed for nothing."""
    given = {f"--{name.replace('_', '-')}": path for name, path in paths.items() if path is not None}
    seen: dict = {}
    for option, path in given.items():
        resolved = Path(path).resolve()
        if resolved in seen:
            raise click.UsageError(f"{seen[resolved]} and {option} name the same file")
        seen[resolved] = option
        if Path(path).is_dir() and not folder_ok:
            raise CharlstmError(f"{path}: is a directory; give a file name")
        if (Path(path).exists() or Path(path).is_symlink()) and not force:
            raise CharlstmError(f"{path}: already exists; pass --force to replace it")
        if not resolved.parent.is_dir():
            raise CharlstmError(f"{path}: its directory does not exist")


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


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

    Every command but serve and export takes --config FILE.toml; CHARLSTM_TRAIN_HIDDEN_SIZE=512 sets
    --hidden-size.
    """
