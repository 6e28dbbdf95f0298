"""Consoles and small formatting helpers every picture uses (rich imported inside functions)."""

from __future__ import annotations


def _console(**kwargs):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich would exit 1 here; every command ends alike when its reader goes away
            # (exit 141, nothing on stderr: charlstm.cli.base), so the error goes on to it.
            self.quiet = True
            raise BrokenPipeError("the reader of the output went away")

    return _Console(highlight=False, **kwargs)


def stderr_console():
    return _console(stderr=True)


def stdout_console():
    return _console()


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def one_line(text: str | None, width: int = 60) -> str:
    if not text:
        return "-"
    text = visible(text).replace("\n", "")
    return text if len(text) <= width else text[: width - 1] + "…"


def visible(piece: str) -> str:
    """Show whitespace that would otherwise vanish: a newline as ↵ (then the line break)."""
    return piece.replace("\t", "→").replace("\r", "␍").replace("\n", "↵\n")
