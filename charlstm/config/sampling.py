"""How to generate text from a trained model (``sample``, ``chat``, the server): ``SampleConfig``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from charlstm.config import CACHE_NEEDS_SIZE, DEVICES, WEIGHTS, CacheConfig
from charlstm.config.fields import _Checks, _Serializable, setting


@dataclass
class SampleConfig(_Serializable):
    """How to generate text from a trained model (``sample`` and ``chat``)."""

    prime: str = setting("", "Text to start from (written out first).")
    length: int = setting(500, "Characters of new text per sample (tokens for --beam-width).")
    temperature: float = setting(0.8, "Sampling temperature; 0 is greedy.")
    top_k: int | None = setting(None, "Sample only from the K most likely tokens.")
    top_p: float | None = setting(None, "Sample only from the most likely tokens making up probability P.")
    min_p: float | None = setting(
        None, "Keep only tokens at least P times as likely as the most likely one (0 < P <= 1)."
    )
    repetition_penalty: float = setting(
        1.0,
        "Make tokens seen in the last --repetition-window tokens less likely (>1; 1 is off). For a "
        "char model it also punishes spaces and common letters: prefer --no-repeat-ngram there.",
    )
    repetition_window: int = setting(64, "How many recent tokens (prime included) the penalty looks at.")
    no_repeat_ngram: int | None = setting(
        None,
        "Never write a token that would repeat an N-token sequence already in the sample (char models: 8-20).",
    )
    beam_width: int | None = setting(
        None, "Beam search: the most likely continuation of --length tokens, deterministic (one sample)."
    )
    num_samples: int = setting(1, "Samples generated together as one batch.")
    seed: int | None = setting(None, "Random seed [default: a new one, recorded by --json].")
    stop: str | None = setting(None, "End a sample where this string appears (it is not written).")
    device: str = setting("auto", "Where to run.", choices=DEVICES)
    weights: str = setting(
        "fp32",
        "Recurrent weights for generation: fp32 as trained; int8 (CPU: faster, a little loss); "
        "bf16 (faster for many samples at once).",
        choices=WEIGHTS,
    )
    cache_size: int = setting(
        0,
        "Mix a neural cache of the last N tokens (prime and output) into every draw: the model "
        "copies more of what it has read; 0: no cache.",
    )
    cache_theta: float | None = setting(
        None, "How sharply the cache prefers the most similar states [default: chosen on the prime]."
    )
    cache_lambda: float | None = setting(None, "The cache's share of the mixture [default: chosen on the prime].")
    logit_bias: dict[int, float] | None = setting(
        None, "Add BIAS to token ID's logit before any filter: ID=BIAS, several separated by commas "
        "(-100 to 100; -100 bans a token, 100 all but forces it; ids as /tokenize or inspect show them).",
    )
    regex: str | None = setting(
        None, "Write only text that matches this regular expression (a sample ends where the text matches "
        "and the model writes something the pattern cannot continue with).",
    )
    json_schema: str | None = setting(None, "Write only JSON that follows this JSON Schema (JSON text).")

    def cache_config(self) -> CacheConfig:
        return CacheConfig(cache_size=self.cache_size, cache_theta=self.cache_theta, cache_lambda=self.cache_lambda)

    def __post_init__(self) -> None:
        c = _Checks(self)
        c.zero_or_more("cache_size")
        c.positive_number("cache_theta")
        c.within("cache_lambda", "[0, 1)")
        if self.cache_size == 0 and (self.cache_theta is not None or self.cache_lambda is not None):
            c.problems.append(CACHE_NEEDS_SIZE)
        c.check("cache_size", lambda size: not size or self.beam_width is None, "does not combine with --beam-width", got=False)
        c.zero_or_more("length")
        c.check("temperature", lambda t: t >= 0 and math.isfinite(t), "must be 0 (greedy) or more")
        c.at_least("top_k", 1)
        c.within("top_p", "(0, 1]")
        c.at_least("num_samples", 1)
        c.check("stop", lambda stop: stop != "", "must not be empty", got=False)
        c.check("device", lambda device: device in DEVICES, f"must be one of {', '.join(DEVICES)}", got=False)
        c.choice("weights", WEIGHTS)
        c.within("min_p", "(0, 1]")
        c.positive_number("repetition_penalty", "must be a positive number, 1 means off")
        c.at_least("repetition_window", 1)
        c.at_least("no_repeat_ngram", 1)
        c.at_least("beam_width", 1)
        c.check("logit_bias", _bias_ok, "must map token ids (whole numbers from 0) to biases from -100 to 100")
        c.check("json_schema", lambda _: self.regex is None, "does not combine with --regex", got=False)
        for name in ("regex", "json_schema", "logit_bias"):
            c.check(name, lambda value: value is None or self.beam_width is None, "does not combine with --beam-width", got=False)
        c.check(
            "beam_width",
            lambda _: self.num_samples == 1,
            "gives one deterministic sample; leave out --num-samples",
            got=False,
        )
        c.raise_if_any()


def _bias_ok(bias) -> bool:
    return isinstance(bias, dict) and all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0
        and isinstance(v, (int, float)) and not isinstance(v, bool) and -100 <= v <= 100
        for k, v in bias.items()
    )
