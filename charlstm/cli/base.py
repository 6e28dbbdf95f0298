"""What every command shares: the ``charlstm`` group, its one-line errors and exit codes, and
the option decorators built from the config dataclasses' fields (flag, default, help and choices
are written once, in ``config.py``)."""

from __future__ import annotations

import dataclasses
import sys

import click

from charlstm import __version__
from charlstm.config import (
    DEVICES,
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


def json_option(function):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(function)


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

    Every command takes --config FILE.toml; CHARLSTM_TRAIN_HIDDEN_SIZE=512 sets --hidden-size.
    """
