"""From token ids to text and back: the prompt's ids, and each row's stream of new text.

``TextStream`` is the one place where a row's token bytes become text: incremental UTF-8
decoding, stop strings (text that may be the start of one is held back until it is ruled out;
the stop string itself is never written) and a limit in characters.
"""

from __future__ import annotations

import codecs

from charlstm.data.tokenizers import default_start_id
from charlstm.errors import ConfigError


def encode_prime(tokenizer, prime: str, what: str = "--prime") -> list[int]:
    """Token ids of the prime text; a clear error, naming ``what`` was given, when the char
    vocabulary lacks some of it. An empty prime is the start of a text (a newline)."""
    if not prime:
        return [default_start_id(tokenizer)]
    if tokenizer.kind == "char":
        missing = tokenizer.unknown_chars(prime)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise ConfigError(f"{what} has characters the model's vocabulary lacks: {shown}; leave them out")
    return tokenizer.encode(prime).tolist()


def single_chars(tokenizer) -> list[str] | None:
    """Each token's text when every token the sampler may write is one whole character (a char
    vocabulary), so text needs no incremental decoding; else None."""
    texts = []
    for i, data in enumerate(tokenizer.token_bytes()):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if len(text) != 1 and i != tokenizer.unk_id:  # the unknown symbol is never written
            return None
        texts.append(text)
    return texts


class TextStream:
    """One row's token bytes turned into text: incremental UTF-8 decoding, the ``stops`` strings
    (held back until ruled out, never written) and at most ``length`` characters (None: no
    limit). ``done`` once a stop string or the length is reached; ``stopped`` says which."""

    def __init__(self, length: int | None = None, stop: str | tuple[str, ...] | None = None):
        self.length = length
        self.stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""  # text that may be the start of a stop string
        self.emitted = 0
        self.stopped = False
        self.done = length == 0

    def feed(self, data: bytes) -> str:
        if self.done:
            return ""
        text = self.pending + self.decoder.decode(data)
        keep = ""
        if self.stops:
            found = [at for at in (text.find(stop) for stop in self.stops) if at != -1]
            if found:
                text, self.done, self.stopped = text[: min(found)], True, True
            else:
                size = max(_prefix_suffix(text, stop) for stop in self.stops)
                text, keep = (text[:-size], text[-size:]) if size else (text, "")
        if self.length is not None and self.emitted + len(text) + len(keep) >= self.length:
            text, keep, self.done = (text + keep)[: self.length - self.emitted], "", True
        self.pending = keep
        self.emitted += len(text)
        return text

    def finish(self) -> str:
        """What is still held back once generation ends."""
        if self.done:
            return ""
        text = self.pending + self.decoder.decode(b"", final=True)
        if self.length is not None:
            text = text[: self.length - self.emitted]
        self.pending, self.done = "", True
        self.emitted += len(text)
        return text


def _prefix_suffix(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that begins ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
