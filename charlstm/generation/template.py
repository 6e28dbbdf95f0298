"""Chat templates: a conversation (messages with roles) written out as a text a model continues.

A character model has no chat format of its own, but a transcript is text it can continue. A
``ChatTemplate`` is a Jinja template, as transformers, vLLM and llama.cpp read them: it gets
``messages`` (each ``{"role", "content"}``), ``add_generation_prompt`` (end with the start of the
assistant's turn), ``bos_token`` and ``eos_token`` (empty: charlstm's vocabularies have none) and
``raise_exception(message)``. Templates come from files anyone may have written, so they run in
Jinja's immutable sandbox: no attribute of Python objects beyond plain data, no file access.

The built-in ``plain`` template writes one line per message, ``Role: content``, and ends with
``Assistant: `` for the reply; ``chatml`` writes ChatML's ``<|im_start|>role`` blocks. A reply
ends at the template's next-turn marker (``stops``), found by rendering the template itself, so
a template file needs no separate stop list.
"""

from __future__ import annotations

from pathlib import Path

from charlstm.errors import ConfigError

PLAIN = (
    "{%- for message in messages -%}\n"
    "{{ message.role | capitalize }}: {{ message.content }}\n"
    "{% endfor -%}\n"
    "{%- if add_generation_prompt %}Assistant: {% endif -%}"
)
CHATML = (
    "{%- for message in messages -%}\n"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor -%}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif -%}"
)
BUILT_IN = {"plain": PLAIN, "chatml": CHATML}
ROLES = ("system", "user", "assistant")
_SENTINEL_A, _SENTINEL_B = "\x00charlstm-a\x00", "\x00charlstm-b\x00"


class _Refused(Exception):
    """A template's own ``raise_exception(message)``."""


def _raise(message):
    raise _Refused(str(message))


class ChatTemplate:
    """A Jinja chat template, compiled once in a sandbox. ``name``: ``plain``, ``chatml`` or the
    file it was read from. ``render(messages)`` is the transcript; ``stops`` the strings that end
    the assistant's turn (the text that follows an assistant message in the template)."""

    def __init__(self, source: str, name: str = "template"):
        try:
            from jinja2 import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise ConfigError("chat templates need jinja2: pip install 'charlstm[serve]'") from None
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        environment.globals["raise_exception"] = _raise
        self.source, self.name = source, name
        try:
            self._template = environment.from_string(source)
        except TemplateError as e:
            raise ConfigError(f"chat template {name}: {e}") from None
        self.stops = self._markers()

    @classmethod
    def named(cls, value: str) -> ChatTemplate:
        """A built-in template by name (``plain``, ``chatml``), or the Jinja template in the file
        ``value`` (a ``--chat-template`` value)."""
        if value in BUILT_IN:
            return cls(BUILT_IN[value], value)
        path = Path(value)
        if not path.is_file():
            raise ConfigError(f"--chat-template {value}: no such file (or give plain or chatml)")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--chat-template {value}: cannot be read ({e})") from None
        return cls(source, path.name)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The transcript of ``messages`` (``{"role", "content"}`` dicts); ``ConfigError`` with
        the template's message when it refuses them or fails."""
        from jinja2 import TemplateError

        try:
            return self._template.render(
                messages=messages, add_generation_prompt=add_generation_prompt, bos_token="", eos_token="",
            )
        except _Refused as e:
            raise ConfigError(f"the chat template refuses these messages: {e}") from None
        except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as e:
            raise ConfigError(f"the chat template {self.name} failed: {type(e).__name__}: {e}") from None

    def _markers(self) -> tuple[str, ...]:
        """What ends an assistant's turn: the text the template writes after an assistant's
        message (ChatML's ``<|im_end|>``), or when that is only whitespace, what comes between it and a
        user's next message (the plain template's ``\\nUser:``), less the whitespace at its end."""
        try:
            alone = self.render([{"role": "assistant", "content": _SENTINEL_A}], add_generation_prompt=False)
            pair = self.render(
                [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL_A},
                 {"role": "user", "content": _SENTINEL_B}],
                add_generation_prompt=False,
            )
        except ConfigError:
            return ()  # a template that insists on its own order of roles: replies end by length only
        after = alone.partition(_SENTINEL_A)[2].strip()
        if after:
            return (after,)
        between = pair.partition(_SENTINEL_A)[2].partition(_SENTINEL_B)[0].rstrip()
        return (between,) if between.strip() else ()


def transcript_messages(messages: list[dict]) -> list[dict]:
    """``messages`` checked for a template: each a ``{"role", "content"}`` with a known role
    (``developer`` is OpenAI's newer name for ``system``) and text content (a string, or OpenAI's
    list of ``{"type": "text", "text"}`` parts); ``ConfigError`` naming the first bad one."""
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConfigError(f"messages[{i}] must be an object with a role and content")
        role = "system" if message.get("role") == "developer" else message.get("role")
        if role not in ROLES:
            raise ConfigError(f"messages[{i}].role must be one of {', '.join(ROLES)} (got {str(role)[:40]!r})")
        content = message.get("content")
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise ConfigError(f"messages[{i}].content: only text parts ({{\"type\": \"text\", \"text\": ...}}) are read")
            content = "".join(p["text"] for p in content)
        if content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise ConfigError(f"messages[{i}].content must be a string or a list of text parts")
        checked.append({"role": role, "content": content})
    return checked
