"""A request to the engine: what it asks (``Request``), what is checked before it runs
(``check_config``), what its rows carry from step to step (``prepare``), and how its prompt is
read (``read_prime``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from charlstm.cells import Hidden
from charlstm.stepper import StepState
from charlstm.config import SampleConfig
from charlstm.errors import ConfigError
from charlstm.generation.cache import GenerationCache
from charlstm.generation.choose import Histories, Noise
from charlstm.generation.constraint import Constraint, compile_pattern, pattern_of
from charlstm.generation.filters import NgramBlocker
from charlstm.generation.text import TextStream

# A prime up to this many tokens is read by the stepper, one token at a time: at batch 1 the fused
# layer's fixed cost per call (and per new sequence length) is larger than a few hundred steps.
STEPPED_PRIME = 256


def read_prime(model, step, ids: torch.Tensor, state: StepState) -> torch.Tensor:
    """Run the model over ``ids`` (T, B) from ``state``, which moves on in place; the last step's
    logits (B, V). Both paths compute the same equations (a long prime goes through the fused
    layer, in fp32, whatever the stepper's weights)."""
    if len(ids) > STEPPED_PRIME:
        logits, hidden = model(ids, state.hidden)  # (T, B, V)
        for mine, new in zip(state.hidden, hidden):
            mine.copy_(new)
        return state.logits.copy_(logits[-1])
    for token in ids:  # (B,)
        logits = step.step_(token, state)  # (B, V)
    return logits


def check_config(config: SampleConfig, token_bytes: list[bytes], device) -> None:
    """What ``config`` asks of a model's vocabulary, checked before anything runs: the ids of
    ``logit_bias``, and a pattern the vocabulary can write (compiled now, and kept)."""
    vocab = len(token_bytes)
    wrong = sorted(i for i in config.logit_bias or {} if i >= vocab)
    if wrong:
        raise ConfigError(f"--logit-bias: token {wrong[0]} is not in the model's vocabulary (ids 0 to {vocab - 1})")
    regex = pattern_of(config.regex, config.json_schema)
    if regex is not None:
        compile_pattern(regex, tuple(token_bytes), str(device))


@dataclass(eq=False)
class Request:
    """Rows to write from one prompt. ``max_tokens``: tokens per row at most; ``max_chars``:
    characters per row at most (None: no limit); ``stops``: strings that end a row (not
    written); ``hidden``: a state to start from (1 row, or one per row) instead of zeros;
    ``cache``: a ``GenerationCache`` to go on with (else one is made for ``config.cache_size``);
    ``logprobs``: per-token records (None: none; 0: the drawn token's; k: and the k most likely);
    ``activation``: (layer, unit) of the state to report per token.

    After each step: ``tokens`` (the ids drawn, one per row), ``pieces`` (the new text), and
    when asked ``token_logprobs``, ``top_logprobs``, ``activations``; ``reasons[row]`` is None
    while the row runs, then "stop" (a stop string) or "length"; ``finished`` once all ended."""

    config: SampleConfig
    prompt_ids: list[int]
    max_tokens: int
    rows: int = 1
    max_chars: int | None = None
    stops: tuple[str, ...] = ()
    hidden: Hidden | None = None
    cache: GenerationCache | None = None
    logprobs: int | None = None
    activation: tuple[int, int] | None = None
    tokens: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    token_logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    activations: list[float] | None = None
    reasons: list[str | None] = field(default_factory=list)
    count: int = 0  # tokens drawn per row
    finished: bool = False

    def __post_init__(self) -> None:
        self.reasons = [None] * self.rows
        self.logprob = [0.0] * self.rows  # per row, nats: see generation.book
        self.counted = [0] * self.rows
        self.ended: dict[int, tuple[Hidden, torch.Tensor]] = {}  # row -> its state and logits when it ended

    def held_back(self, row: int = 0) -> str:
        """Text row ``row``'s stream still holds (a possible start of a stop string), released
        when the row is ended from outside (a time limit)."""
        return self._streams[row].finish() if self._streams else ""


def prepare(request: Request, vocab: int, token_bytes: list[bytes], table: list[str] | None, device) -> None:
    """What a request's rows carry from step to step besides their state."""
    config, rows = request.config, request.rows
    check_config(config, token_bytes, device)
    request._bias = None
    if config.logit_bias:
        request._bias = torch.zeros(vocab, device=device)
        request._bias[list(config.logit_bias)] = torch.tensor([float(v) for v in config.logit_bias.values()], device=device)
    regex = pattern_of(config.regex, config.json_schema)
    request._constraint = None
    if regex is not None:
        request._constraint = Constraint(compile_pattern(regex, tuple(token_bytes), str(device)), rows)
    request._noise = Noise(rows, vocab, config.seed, device) if config.temperature > 0 else None
    request._blocker = None
    if config.no_repeat_ngram is not None:
        request._blocker = NgramBlocker.from_history(config.no_repeat_ngram, [request.prompt_ids] * rows)
    window = config.repetition_window if config.repetition_penalty != 1.0 else 1
    request._ring = Histories.start(request.prompt_ids, window, rows, device)
    fast = table is not None and not request.stops and request._constraint is None
    # Followed each step: text through a TextStream, a constraint, or records per token.
    request._followed = not fast or request.logprobs is not None or request.activation is not None
    request._streams = None if fast else [TextStream(request.max_chars, request.stops) for _ in range(rows)]
    limit = request.max_tokens
    request._limit = min(limit, request.max_chars) if fast and request.max_chars is not None else limit
