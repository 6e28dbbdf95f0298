"""Output that must have a shape: a regular expression or a JSON Schema, as a mask per token.

The pattern is compiled (by ``outlines-core``, the Rust core of the ``outlines`` library: a JSON
Schema becomes a regular expression, the expression a finite automaton over the model's own
tokens) into an ``Index``: from each state, the tokens that keep the text a prefix of some match.
Each row keeps its state; before each draw the tokens the state does not allow get -inf.

A character model has no end-of-text token, so where the text already matches (a final state)
the row may end: it draws from the whole distribution, and if the token drawn is one the pattern
does not allow there, the row ends before it. The chance of ending is the model's own mass on
what the pattern cannot continue with. A final state that allows nothing more ends the row at
once. A row cut by its length before a final state ends with "length" and may not match.

outlines-core is an optional extra (``pip install "charlstm[constrain]"``): a 2 MB wheel with no
dependencies. Chosen over llguidance (grammars too, but it wants a tokenizer object of its own)
and xgrammar (built around Hugging Face tokenizers); interegular alone compiles regular
expressions but not JSON Schema.
"""

from __future__ import annotations

import json
from functools import lru_cache

import torch

from charlstm.errors import ConfigError

INSTALL = 'constrained output needs outlines-core: pip install "charlstm[constrain]"'


def pattern_of(regex: str | None, json_schema: str | None) -> str | None:
    """The regular expression a row must match: ``regex`` as it is, or ``json_schema`` (JSON
    text) turned into one; None when neither is given. A bad one is a ``ConfigError``."""
    if json_schema is None:
        return regex
    try:
        from outlines_core.json_schema import build_regex_from_schema
    except ImportError:
        raise ConfigError(INSTALL) from None
    try:
        kept = sorted(_unkept(json.loads(json_schema)))
        if kept:
            raise ConfigError(f"--json-schema: {', '.join(kept)} cannot be kept by a pattern; leave them out")
        return build_regex_from_schema(json_schema)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--json-schema is not a schema charlstm can follow: {_short(e)}") from None


# Keywords a regular expression cannot keep (bounds on numbers, relations between values):
# outlines-core would ignore them, so a schema that has them is refused rather than followed loosely.
UNKEPT = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "not",
    "if", "then", "else", "dependentRequired", "dependentSchemas", "minProperties", "maxProperties", "contains",
})


def _unkept(schema) -> set[str]:
    """The ``UNKEPT`` keywords anywhere in ``schema``."""
    if isinstance(schema, dict):
        found = UNKEPT & set(schema)
        for key, value in schema.items():
            if key not in ("enum", "const", "default", "examples"):
                found |= _unkept(value)
        return found
    if isinstance(schema, list):
        return set().union(*(_unkept(item) for item in schema)) if schema else set()
    return set()


class Pattern:
    """A regular expression compiled over one tokenizer's vocabulary. ``start`` is the first
    state; ``mask(state)`` is a (V,) tensor of 0 (allowed) and -inf; ``final(state)``: the text
    so far matches; ``next(state, token)``: the state after ``token`` (None: not allowed)."""

    def __init__(self, regex: str, token_bytes: tuple[bytes, ...], device):
        try:
            from outlines_core import Index, Vocabulary
        except ImportError:
            raise ConfigError(INSTALL) from None
        self.end = len(token_bytes)  # a token id the vocabulary lacks: "end of text" for the automaton
        pieces: dict[str, list[int]] = {}
        for i, data in enumerate(token_bytes):
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a part of a character (byte tokens above 127) is never allowed
            if text:
                pieces.setdefault(text, []).append(i)
        try:
            self.index = Index(regex, Vocabulary(self.end, pieces))
        except (ValueError, RuntimeError) as e:
            message = str(e)
            if "following characters:" in message:  # outlines-core names what the vocabulary lacks
                needed = message.split("following characters:", 1)[1].split("]", 1)[0].strip(" [")
                raise ConfigError(f"the model's vocabulary lacks characters the pattern needs (one of {needed})") from None
            raise ConfigError(f"the pattern is not one charlstm can follow: {_short(e)}") from None
        self.start = self.index.get_initial_state()
        self.device = device
        self._masks: dict[int, torch.Tensor] = {}
        self._allowed: dict[int, frozenset[int]] = {}

    def allowed(self, state: int) -> frozenset[int]:
        if state not in self._allowed:
            self._allowed[state] = frozenset(self.index.get_allowed_tokens(state)) - {self.end}
        return self._allowed[state]

    def final(self, state: int) -> bool:
        return self.index.is_final_state(state)

    def mask(self, state: int) -> torch.Tensor:
        if state not in self._masks:
            mask = torch.full((self.end,), float("-inf"), device=self.device)
            mask[list(self.allowed(state))] = 0.0
            self._masks[state] = mask
        return self._masks[state]

    def next(self, state: int, token: int) -> int | None:
        if token not in self.allowed(state):
            return None
        return self.index.get_next_state(state, token)


@lru_cache(maxsize=32)
def compile_pattern(regex: str, token_bytes: tuple[bytes, ...], device: str) -> Pattern:
    """``Pattern`` for ``regex`` over a vocabulary, compiled once per process (the same pattern
    for many requests is the common case on a server)."""
    return Pattern(regex, token_bytes, device)


class Constraint:
    """The rows of one request following one ``Pattern``: each row's state, the mask its next
    draw takes, and whether the token drawn continues it or ends the row."""

    def __init__(self, pattern: Pattern, rows: int):
        self.pattern = pattern
        self.states = [pattern.start] * rows

    def masks(self) -> list[torch.Tensor | None]:
        """Per row, the mask of its next draw; None where the text matches already (the row draws
        from everything, and a token the pattern does not allow ends it)."""
        return [None if self.pattern.final(s) else self.pattern.mask(s) for s in self.states]

    def complete(self, row: int) -> bool:
        """The row's text matches and nothing may follow: it ends without drawing."""
        state = self.states[row]
        return self.pattern.final(state) and not self.pattern.allowed(state)

    def advance(self, row: int, token: int) -> bool:
        """Move row ``row`` on by ``token``; False when the token ends the row instead."""
        state = self.pattern.next(self.states[row], token)
        if state is None:
            return False
        self.states[row] = state
        return True


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
