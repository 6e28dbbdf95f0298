"""How a settings dataclass is written: ``setting`` (a field with its help and choices), ``flag``
(a field's command-line name), the checks every config runs in ``__post_init__`` (``_Checks``:
all problems at once, each naming its flag) and reading and writing as a dict (``_Serializable``).
The settings themselves are in ``charlstm.config``."""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from dataclasses import field
from typing import Any

from charlstm.errors import ConfigError


def setting(default: Any, help: str, *, choices: tuple[str, ...] | None = None, fixed: bool = False):
    """A config field with what the command line shows for it. ``fixed``: a resumed run must keep
    it (it fixes the model's shape, the tokens or the order of the data)."""
    return field(default=default, metadata={"help": help, "choices": choices, "fixed": fixed})


def flag(name: str) -> str:
    """The command-line flag of a field: ``hidden_size`` -> ``--hidden-size``."""
    return "--" + name.replace("_", "-")


def differences(changes: dict, saved: dict, names, owner: str) -> list[str]:
    """Each of ``names`` whose value in ``changes`` (what the user gave) differs from ``saved``,
    as ``--flag new (the <owner> has old)``."""
    return [
        f"{flag(name)} {changes[name]!r} (the {owner} has {saved.get(name)!r})"
        for name in names
        if name in changes and changes[name] != saved.get(name)
    ]


def fixed_on_resume(*classes) -> tuple[str, ...]:
    """The fields of ``classes`` that a resumed run cannot change."""
    return tuple(f.name for cls in classes for f in dataclasses.fields(cls) if f.metadata.get("fixed"))


class _Checks:
    """Checks a config's fields, each named once: the flag and the value come from the field's
    name, and a problem reads ``--flag <message> (got <value>)``. A field whose default is None
    is not checked while it is None (not given). Every problem is collected, in the order checked,
    so the user can fix them all in one go."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.optional = {f.name for f in dataclasses.fields(config) if f.default is None}
        self.problems: list[str] = []

    def check(
        self, name: str, ok: Callable[[Any], bool], message: str, *, got: bool | Callable[[Any], str] = True
    ) -> None:
        """A problem unless ``ok(value)``. ``got``: whether the message ends with the value, or
        how to show it."""
        value = getattr(self.config, name)
        if value is None and name in self.optional:
            return
        if not ok(value):
            shown = "" if got is False else f" (got {value if got is True else got(value)})"
            self.problems.append(f"{flag(name)} {message}{shown}")

    def at_least(self, name: str, low: int) -> None:
        self.check(name, lambda value: value >= low, f"must be at least {low}")

    def zero_or_more(self, name: str) -> None:
        self.check(name, lambda value: value >= 0, "must be 0 or more")

    def positive_number(self, name: str, message: str = "must be a positive number") -> None:
        self.check(name, lambda value: value > 0 and math.isfinite(value), message)

    def within(self, name: str, interval: str) -> None:
        """``interval``: as the message shows it, ``"[0, 1)"``, ``"(0, 1]"``, ..."""
        low, high = (float(end) for end in interval[1:-1].split(","))
        above = operator.ge if interval[0] == "[" else operator.gt
        below = operator.le if interval[-1] == "]" else operator.lt
        self.check(name, lambda value: above(value, low) and below(value, high), f"must be in {interval}")

    def choice(self, name: str, choices: tuple[str, ...]) -> None:
        self.check(name, lambda value: value in choices, f"must be one of {', '.join(choices)}", got=repr)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError("; ".join(self.problems))


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict, ignoring keys this class does not know (older/newer runs, or a
        ``ModelConfig`` dict read as a ``ModelShape``)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
