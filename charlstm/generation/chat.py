"""Interactive generation: a text that goes on turn after turn.

A ``ChatSession`` keeps the model's hidden state between turns: each line the user gives is read
on top of what came before, and the model continues it, so the text goes on where it left off
until ``reset``. With a chat template (``generation.template``) each line is instead a user's
message: the whole conversation is written out by the template and read from the start, and the
reply is the assistant's turn, ending at the template's next-turn marker, as the server's
``/v1/chat/completions`` writes it for the same messages and seed. Settings (temperature, length, top-k/top-p/min-p, seed, ...) change between
turns through ``set``, validated as ``SampleConfig`` validates them. ``charlstm chat`` drives it
(``cli/chat.py``); nothing here reads a terminal.
"""

from __future__ import annotations

import dataclasses
import secrets

import torch

from charlstm.cells import Hidden
from charlstm.stepper import TokenStepper
from charlstm.config import SampleConfig, flag
from charlstm.errors import ConfigError
from charlstm.data.tokenizers import default_start_id
from charlstm.generation.sampling import Generation, encode_prime, generate

# What a turn can change, by the name typed after "/" (the flags' names), and how to read it.
SETTINGS = {
    "temperature": float,
    "length": int,
    "top-k": int,
    "top-p": float,
    "min-p": float,
    "repetition-penalty": float,
    "repetition-window": int,
    "no-repeat-ngram": int,
    "seed": int,
}
_OFF = ("off", "none")  # "/top-k off": back to no filter


class ChatSession:
    """The state of one conversation with a model: its hidden state, the next token's logits and
    the sampling settings. One sample at a time."""

    def __init__(self, model, tokenizer, config: SampleConfig, device, template=None):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.template = template  # a generation.template.ChatTemplate, or None: one text that goes on
        self.messages: list[dict] = []  # with a template: the conversation so far
        self.stepper = TokenStepper(model, config.weights)  # built once: its weights are laid out for one-token steps
        seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
        self.config = dataclasses.replace(config, num_samples=1, seed=seed, prime="", beam_width=None)
        self.turns = 0  # a new seed per turn, derived from --seed: replies differ, yet repeat exactly
        self.hidden: Hidden | None = None
        self.logits: torch.Tensor | None = None  # (V,): the next token's, after the text so far
        self.cache = None  # with --cache-size: the GenerationCache of every turn's text

    def reply(self, text: str) -> Generation:
        """Read ``text`` after everything so far and continue it; iterate over the result for
        the new text. Stopping early (Ctrl-C) keeps what was generated up to there."""
        if self.template is not None:
            return self._turn(text)
        encode_prime(self.tokenizer, text, what="the line")  # unknown characters: one clear line
        config = dataclasses.replace(self.config, prime=text or "\n", seed=self.config.seed + self.turns)
        generation = generate(
            self.model, self.tokenizer, config, self.device, hidden=self.hidden, stepper=self.stepper, cache=self.cache
        )
        self.cache = generation.cache
        self.turns += 1
        return _Tracked(generation, self)

    def _turn(self, text: str) -> _Turn:
        """With a template: the conversation and ``text`` as the user's message, written out and
        read from a zero state; the reply ends at the template's next-turn marker."""
        messages = [*self.messages, {"role": "user", "content": text}]
        transcript = self.template.render(messages)
        encode_prime(self.tokenizer, transcript, what="the transcript")
        config = dataclasses.replace(self.config, prime=transcript, seed=self.config.seed + self.turns)
        generation = generate(
            self.model, self.tokenizer, config, self.device, stepper=self.stepper, stops=self.template.stops
        )
        self.turns += 1
        return _Turn(generation, self, messages)

    def reset(self) -> None:
        """Start again: forget the text so far, and count turns (and their seeds) from the first."""
        self.hidden, self.logits, self.turns, self.cache = None, None, 0, None
        self.messages = []

    @torch.inference_mode()
    def top_next(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after the text so far, with their probabilities."""
        logits = self.logits
        if logits is None:  # nothing read yet: what follows the start of a text
            start = torch.tensor([[default_start_id(self.tokenizer)]], device=self.device)  # (1, 1)
            logits = self.model(start, self.hidden)[0][-1, 0]  # (V,)
        probs = logits.float().softmax(-1)  # (V,)
        if self.tokenizer.unk_id is not None:
            probs[self.tokenizer.unk_id] = 0.0  # never written, so never shown
        p, ids = probs.topk(min(k, probs.numel()))
        table = self.tokenizer.token_bytes()
        return [(table[i].decode("utf-8", "replace"), float(q)) for i, q in zip(ids.tolist(), p.tolist())]

    def set(self, name: str, value: str) -> None:
        """Change one setting (``name`` as in ``SETTINGS``); a bad value raises ``ConfigError``
        naming its flag, and changes nothing."""
        if name not in SETTINGS:
            raise ConfigError(f"/{name}: not a setting; settings are {', '.join('/' + n for n in SETTINGS)}")
        field = name.replace("-", "_")
        if value.lower() in _OFF and field in ("top_k", "top_p", "min_p", "no_repeat_ngram"):
            parsed = None
        else:
            try:
                parsed = SETTINGS[name](value)
            except ValueError:
                raise ConfigError(f"{flag(field)} {value!r} is not a {SETTINGS[name].__name__}") from None
        self.config = dataclasses.replace(self.config, **{field: parsed})
        if field == "seed":
            self.turns = 0

    def settings(self) -> dict:
        return {name: getattr(self.config, name.replace("-", "_")) for name in SETTINGS}


class _Tracked:
    """A ``Generation`` whose final state (also when stopped early) becomes the session's."""

    def __init__(self, generation: Generation, session: ChatSession):
        self.generation, self.session = generation, session

    def __iter__(self):
        try:
            for pieces in self.generation:
                yield pieces[0]
        finally:
            self.session.hidden = self.generation.hidden
            if self.generation.logits is not None:
                self.session.logits = self.generation.logits[0]


class _Turn:
    """A templated reply: once it ends (also when stopped early), the user's message and the
    reply join the session's conversation."""

    def __init__(self, generation: Generation, session: ChatSession, messages: list[dict]):
        self.generation, self.session, self.messages = generation, session, messages

    def __iter__(self):
        written = []
        try:
            for pieces in self.generation:
                written.append(pieces[0])
                yield pieces[0]
        finally:
            self.session.messages = [*self.messages, {"role": "assistant", "content": "".join(written)}]
            if self.generation.logits is not None:
                self.session.logits = self.generation.logits[0]
