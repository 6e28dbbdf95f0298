"""The server's limits, and request bodies checked into typed records.

Every field is checked before any work starts; the first problem found is a 400 naming the
field, in OpenAI's error shape (``errors.ApiError``). The fields are OpenAI's completions fields
plus charlstm's own sampling options (``top_k``, ``min_p``, ``repetition_penalty``,
``repetition_window``) and ``activation`` (the cell whose value the playground colours by).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from charlstm.config import SampleConfig
from charlstm.errors import ConfigError
from charlstm.serving.errors import ApiError, bad_field


@dataclass(frozen=True)
class Limits:
    """What one request may ask for and how much may wait; each is a ``charlstm serve`` flag."""

    max_body_bytes: int = 1 << 20  # --max-body-bytes: larger bodies get 413
    max_prompt_chars: int = 32_768  # --max-prompt-chars
    max_tokens: int = 4096  # --max-tokens: the most a request may ask for
    max_n: int = 8  # --max-n: choices per request (prompts x n)
    max_stops: int = 4  # stop strings per request (OpenAI's limit)
    max_batch: int = 64  # --max-batch: requests generated together; more wait in the queue
    max_queue: int = 64  # --max-queue: requests waiting; more get 503 with Retry-After
    time_limit: float = 120.0  # --time-limit: seconds one generation may run (finish_reason "time_limit")
    retry_after: int = 1  # seconds a 503 asks the client to wait


DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the completions API
MAX_LOGPROBS = 5  # OpenAI's limit on top alternatives per token
MAX_SEED = 2**63 - 1

# The SampleConfig fields a request sets by the same name, each with how the body's value is
# checked (OpenAI's bounds where OpenAI has the field); a new sampling option is one line here.
SAMPLING_FIELDS = {
    "temperature": lambda body: _float(body, "temperature", 1.0, low=0.0, high=100.0),
    "top_k": lambda body: _int(body, "top_k", None, 1),
    "top_p": lambda body: _float(body, "top_p", None, low=0.0, high=1.0, open_low=True),
    "min_p": lambda body: _float(body, "min_p", None, low=0.0, high=1.0, open_low=True),
    "repetition_penalty": lambda body: _float(body, "repetition_penalty", 1.0, low=0.0, high=100.0, open_low=True),
    "repetition_window": lambda body: _int(body, "repetition_window", 64, 1, 4096),
    "no_repeat_ngram": lambda body: _int(body, "no_repeat_ngram", None, 1, 64),
    "logit_bias": lambda body: _logit_bias(body),
    "regex": lambda body: _pattern(body),
    "json_schema": lambda body: _response_format(body),
}
MAX_PATTERN_CHARS = 10_000  # regex, or a JSON Schema as JSON text
_COMPLETION_FIELDS = {
    "model", "prompt", "max_tokens", "n", "stop", "seed", "stream", "stream_options", "logprobs", "echo",
    "activation", "presence_penalty", "frequency_penalty", "response_format", "user", "best_of", "suffix",
    *SAMPLING_FIELDS,
}  # fmt: skip


@dataclass(frozen=True)
class Sampling:
    """How one choice is generated: ``config``, the ``SampleConfig`` fields a request may set
    (``SAMPLING_FIELDS``: the same names and meaning as ``charlstm sample``'s flags, checked by
    ``SampleConfig`` itself too), and what the server adds: a budget in tokens, stop strings,
    per-token records."""

    config: SampleConfig = field(default_factory=lambda: SampleConfig(temperature=1.0))
    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: and the k most likely
    activation: tuple[int, int] | None = None  # (layer, unit), 0-based


@dataclass(frozen=True)
class CompletionRequest:
    model: str | None
    prompts: tuple[str | tuple[int, ...], ...]  # text, or token ids
    n: int
    seed: int | None
    stream: bool
    include_usage: bool
    echo: bool
    sampling: Sampling


@dataclass(frozen=True)
class ScoreRequest:
    model: str | None
    lines: tuple[str, ...]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def _int(body: dict, name: str, default, low: int, high: int | None = None):
    value = body.get(name)
    if value is None:
        return default
    if not _is_int(value):
        raise bad_field(name, f"must be a whole number (got {_shown(value)})")
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise bad_field(name, f"must be {bounds} (got {value})")
    return value


def _float(body: dict, name: str, default, *, low: float, high: float | None = None, open_low: bool = False):
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value):
        raise bad_field(name, f"must be a number (got {_shown(value)})")
    if (value <= low if open_low else value < low) or (high is not None and value > high):
        left = "(" if open_low else "["
        right = f"{high}]" if high is not None else "inf)"
        raise bad_field(name, f"must be in {left}{low}, {right} (got {value})")
    return float(value)


def _bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_field(name, f"must be true or false (got {_shown(value)})")
    return value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _model(body: dict) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_field("model", f"must be a string, a model's id from /v1/models (got {_shown(model)})")
    return model


def _texts(body: dict, name: str, limits: Limits, required: bool = True) -> tuple[str, ...]:
    """A string or a non-empty list of strings, each at most ``max_prompt_chars`` characters."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_field(name, "is required")
        return ("",)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_field(name, "must be a string or a non-empty list of strings")
    for text in texts:
        if len(text) > limits.max_prompt_chars:
            raise bad_field(name, f"is {len(text):,} characters; the limit is {limits.max_prompt_chars:,}")
    return tuple(texts)


def _prompts(body: dict, limits: Limits) -> tuple[str | tuple[int, ...], ...]:
    """``prompt`` as OpenAI allows it: a string, a list of strings, a list of token ids, or a
    list of such lists (ids are checked against the model's vocabulary once it is known)."""
    value = body.get("prompt")
    if isinstance(value, list) and value and all(_is_int(t) for t in value):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
        if not all(p and all(_is_int(t) and t >= 0 for t in p) for p in value):
            raise bad_field("prompt", "token ids must be non-empty lists of whole numbers from 0")
        for ids in value:
            if len(ids) > limits.max_prompt_chars:
                raise bad_field("prompt", f"is {len(ids):,} tokens; the limit is {limits.max_prompt_chars:,}")
        return tuple(tuple(ids) for ids in value)
    if isinstance(value, list) and any(not isinstance(p, str) for p in value):
        raise bad_field("prompt", "must be a string, a list of strings, a list of token ids or a list of such lists")
    return _texts(body, "prompt", limits, required=False)


def _logit_bias(body: dict) -> dict[int, float] | None:
    """OpenAI's ``logit_bias``: {"token id": bias from -100 to 100}, ids as strings (JSON keys)."""
    value = body.get("logit_bias")
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or len(value) > 1024:
        raise bad_field("logit_bias", "must be an object of at most 1,024 token ids to biases")
    bias = {}
    for key, number in value.items():
        if not (isinstance(key, str) and key.isdigit() and len(key) < 10):
            raise bad_field("logit_bias", f"{_shown(key)} is not a token id")
        if not _is_number(number) or not -100 <= number <= 100:
            raise bad_field("logit_bias", f"the bias of token {key} must be a number from -100 to 100 (got {_shown(number)})")
        bias[int(key)] = float(number)
    return bias


def _pattern(body: dict) -> str | None:
    value = body.get("regex")
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_PATTERN_CHARS:
        raise bad_field("regex", f"must be a regular expression of 1 to {MAX_PATTERN_CHARS:,} characters")
    return value


def _response_format(body: dict) -> str | None:
    """OpenAI's ``response_format`` as the JSON Schema (JSON text) the output must follow:
    ``{"type": "json_object"}`` any object, ``{"type": "json_schema", "json_schema": {"schema":
    ...}}`` that schema, ``{"type": "text"}`` none."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text" and set(value) == {"type"}:
        return None
    if kind == "json_object" and set(value) == {"type"}:
        return json.dumps({"type": "object"})
    spec = value.get("json_schema") if kind == "json_schema" else None
    if not (isinstance(spec, dict) and isinstance(spec.get("schema"), dict) and set(value) == {"type", "json_schema"}):
        raise bad_field(
            "response_format", 'must be {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", '
            '"json_schema": {"name": ..., "schema": {...}}}'
        )
    text = json.dumps(spec["schema"])
    if len(text) > MAX_PATTERN_CHARS:
        raise bad_field("response_format", f"the schema is over {MAX_PATTERN_CHARS:,} characters")
    return text


def parse_completion(body, limits: Limits) -> CompletionRequest:
    """The checked request, or ``ApiError`` 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - _COMPLETION_FIELDS)
    if unknown:
        raise bad_field(unknown[0], "unknown field")
    # OpenAI's fields that charlstm does not implement are accepted only at their neutral values.
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0) or isinstance(body.get(name), bool):
            raise bad_field(name, "is not supported (use repetition_penalty); leave it out or 0")
    if body.get("suffix") is not None:
        raise bad_field("suffix", "is not supported (insertion); leave it out")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_field("user", "must be a string")

    model = _model(body)
    prompts = _prompts(body, limits)
    n = _int(body, "n", 1, 1, limits.max_n)
    if len(prompts) * n > limits.max_n:
        raise bad_field("n", f"{len(prompts)} prompts x n {n} is more than {limits.max_n} choices")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise bad_field("best_of", "is not supported other than equal to n; leave it out")
    max_tokens = _int(body, "max_tokens", DEFAULT_MAX_TOKENS, 0, limits.max_tokens)
    settings = {name: parse(body) for name, parse in SAMPLING_FIELDS.items()}
    seed = _int(body, "seed", None, 0, MAX_SEED)
    logprobs = _int(body, "logprobs", None, 0, MAX_LOGPROBS)

    stop = body.get("stop")
    stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise bad_field("stop", "must be a string or a list of strings")
    if len(stops) > limits.max_stops:
        raise bad_field("stop", f"has {len(stops)} strings; the limit is {limits.max_stops}")
    if any(s == "" for s in stops):
        raise bad_field("stop", "must not hold an empty string")
    if any(len(s) > 1000 for s in stops):
        raise bad_field("stop", "a stop string is over 1,000 characters")

    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise bad_field("stream_options", 'must be an object with only "include_usage"')
    include_usage = _bool(options or {}, "include_usage")

    activation = body.get("activation")
    if activation is not None:
        if not (
            isinstance(activation, dict)
            and set(activation) == {"layer", "unit"}
            and all(_is_int(v) and v >= 0 for v in activation.values())
        ):
            raise bad_field("activation", 'must be {"layer": L, "unit": U} with whole numbers from 0')
        activation = (activation["layer"], activation["unit"])

    try:
        config = SampleConfig(**settings)
    except ConfigError as e:  # a bound the checks above do not know: SampleConfig's own message
        named = [name for name in settings if f"--{name.replace('_', '-')} " in str(e)]
        field = named[0] if named else "temperature"
        raise bad_field("response_format" if field == "json_schema" else field, str(e)) from None
    sampling = Sampling(config, max_tokens=max_tokens, stop=tuple(stops), logprobs=logprobs, activation=activation)
    return CompletionRequest(
        model=model,
        prompts=prompts,
        n=n,
        seed=seed,
        stream=_bool(body, "stream"),
        include_usage=include_usage,
        echo=_bool(body, "echo"),
        sampling=sampling,
    )


def parse_score(body, limits: Limits) -> ScoreRequest:
    """``{"model": ..., "input": "a line" | ["line", ...]}``: each string is one line (no newlines)."""
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - {"model", "input"})
    if unknown:
        raise bad_field(unknown[0], "unknown field")
    lines = _texts(body, "input", limits)
    if sum(len(line) for line in lines) > limits.max_prompt_chars:
        raise bad_field("input", f"holds more than {limits.max_prompt_chars:,} characters in all")
    if any("\n" in line for line in lines):
        raise bad_field("input", "a line holds a newline; send each line as its own string")
    return ScoreRequest(_model(body), lines)
