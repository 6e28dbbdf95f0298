"""``charlstm chat``: writing with a model turn by turn, in a terminal or from a pipe."""

from __future__ import annotations

import signal
import sys

import click

from charlstm.cli.base import _given, cli, config_file_option, run_argument
from charlstm.cli.generation import CACHE_OPTIONS, GENERATION_OPTIONS, sample_options
from charlstm.config import SampleConfig
from charlstm.errors import ConfigError

_CHAT_HELP = """commands (a line starting with / ; anything else is text to continue):
  /temperature T  /length N  /top-k K|off  /top-p P|off  /min-p P|off  /seed N
  /repetition-penalty R  /repetition-window N  /no-repeat-ngram N|off
  /top [N]      the N most likely next tokens (default 10) with their probabilities
  /reset        forget the text so far
  /settings     show the settings
  /help, /quit  (Ctrl-C stops a reply, Ctrl-D leaves)"""


_SESSION = (*GENERATION_OPTIONS, "temperature", "seed", "weights", *CACHE_OPTIONS)


@cli.command()
@config_file_option
@run_argument
@click.option(
    "--temperature", type=float, default=None, help="Sampling temperature; 0 is greedy.  [default: 0.8]"
)
@click.option("--length", type=int, default=None, help="Characters of each reply.  [default: 200]")
@sample_options(*(name for name in GENERATION_OPTIONS if name != "length"))
@click.option(
    "--seed", type=int, default=None, help="Random seed  [default: a new one, shown by /settings]"
)
@sample_options("device", "weights", *CACHE_OPTIONS)
@click.option(
    "--chat-template", default=None, metavar="FILE|plain|chatml",
    help="Each line is a user's message and each reply the assistant's, the conversation written "
    "out by this Jinja chat template (as serve's /v1/chat/completions writes it)  [default: none, one text that goes on]",
)
def chat(run: str, chat_template: str | None, **options) -> None:
    """Write with a model, turn by turn: each line you type is continued, and the text goes on
    where it left off (the model keeps its state between turns) until /reset. With
    --chat-template, each line is a message and each reply an answer, as a chat server writes it.

    A command of its own, apart from `sample`: it is a loop with its own commands and state,
    while `sample` stays a one-shot command for pipes and scripts. When stdin is not a terminal,
    each line read is answered in turn (no prompt), so it can be scripted. Type /help for the
    commands.

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    import charlstm

    config = SampleConfig.from_dict({"length": 200, **_given(options)})
    lm = charlstm.load(run, device=config.device, weights=config.weights)
    session = lm.session(**{name: getattr(config, name) for name in _SESSION}, chat_template=chat_template)
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        click.echo(
            f"charlstm chat {run} (seed {session.settings['seed']}); /help for commands, Ctrl-D to leave",
            err=True,
        )
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
            with _CtrlC() as ctrl_c:
                for piece in session.stream(line):
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                    if ctrl_c.pressed:
                        break
        except KeyboardInterrupt:
            pass  # the reply stops here; the text so far is kept
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    if interactive:
        click.echo("", err=True)


# Every /command chat knows, as an unknown one's message lists them.
_CHAT_COMMANDS = (
    "temperature", "length", "top-k", "top-p", "min-p", "seed", "repetition-penalty",
    "repetition-window", "no-repeat-ngram", "top", "reset", "settings", "help", "quit",
)


def _setting_text(value) -> str:
    """A setting as /settings shows it: a filter that is not set is "off", never Python's None."""
    return "off" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class _CtrlC:
    """Ctrl-C while a reply is written stops that reply. The handler raises KeyboardInterrupt
    (which leaves a blocked write or a long step) and also sets ``pressed``, which the loop
    checks after each piece: an interrupt raised inside a finaliser is swallowed by Python, and
    the reply must stop all the same."""

    def __enter__(self) -> _CtrlC:
        self.pressed = False
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.pressed = True
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        # None: a handler installed outside Python, which cannot be put back; Python's own then.
        signal.signal(signal.SIGINT, signal.default_int_handler if self._previous is None else self._previous)


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
        click.echo("  ".join(f"{k} {_setting_text(v)}" for k, v in session.settings.items()), err=True)
    elif name not in _CHAT_COMMANDS:
        commands = ", ".join("/" + c for c in _CHAT_COMMANDS)
        click.echo(f"error: /{name}: not a command; the commands are {commands}", err=True)
    elif name == "top":
        try:
            k = int(value) if value else 10
        except ValueError:
            click.echo(f"error: /top {value}: give a whole number", err=True)
            return True
        for piece, prob in session.top_next(max(1, k)):
            click.echo(f"{prob:8.4f}  {piece!r}")
    else:
        before = session.settings.get(name)
        try:
            session.set(name, value)
        except ConfigError as e:
            click.echo(f"error: {e}", err=True)
            return True
        after = session.settings.get(name)
        click.echo(f"{name} {_setting_text(before)} -> {_setting_text(after)}", err=True)
    return True
