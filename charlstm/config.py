"""Typed configuration objects, validated on construction.

Each field has the same name as its command-line flag (``hidden_size`` <-> ``--hidden-size``), so
an error can name the flag to change. All problems with a config are reported at once.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from charlstm.errors import ConfigError

TOKENIZERS = ("char", "byte", "bpe", "unigram")
DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CELLS = ("lstm", "gru", "rnn")
ENCODING_ERRORS = ("strict", "replace")

# Settings a resumed run must keep: they fix the model's shape, the tokens or the order of the
# data. Everything else (--lr, --max-steps, --dropout, --device, ...) may change on --resume.
FIXED_ON_RESUME = {
    "model": ("cell", "embedding_dim", "hidden_size", "num_layers", "tie_weights"),
    "train": ("tokenizer", "vocab_size", "val_fraction", "batch_size", "bptt", "seed", "encoding_errors"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


class _Checks:
    """Collects every problem so the user can fix them all in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.problems.append(f"{_flag(name)} {message}")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError("; ".join(self.problems))


class _Serializable:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict, ignoring keys this version does not know (older/newer runs)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class ModelConfig(_Serializable):
    """Shape of the language model: embedding -> stacked LSTM -> dropout -> projection."""

    vocab_size: int
    embedding_dim: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1
    tie_weights: bool = False
    cell: str = "lstm"  # "gru" and "rnn" (tanh) for comparison

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.cell in CELLS, "cell", f"must be one of {', '.join(CELLS)}")
        c.require(self.vocab_size >= 2, "vocab_size", f"must be at least 2 (got {self.vocab_size})")
        c.require(self.embedding_dim >= 1, "embedding_dim", f"must be at least 1 (got {self.embedding_dim})")
        c.require(self.hidden_size >= 1, "hidden_size", f"must be at least 1 (got {self.hidden_size})")
        c.require(self.num_layers >= 1, "num_layers", f"must be at least 1 (got {self.num_layers})")
        c.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1) (got {self.dropout})")
        c.require(
            not self.tie_weights or self.embedding_dim == self.hidden_size,
            "tie_weights",
            f"needs --embedding-dim equal to --hidden-size (got {self.embedding_dim} and {self.hidden_size})",
        )
        c.raise_if_any()


@dataclass
class TrainConfig(_Serializable):
    """How to train: data layout, optimisation, stopping, evaluation and output."""

    tokenizer: str = "char"
    vocab_size: int = 512  # SentencePiece tokenizers only
    val_fraction: float = 0.1
    batch_size: int = 32
    bptt: int = 64
    lr: float = 4e-3
    lr_schedule: str = "cosine"
    warmup_steps: int = 20
    weight_decay: float = 0.01
    clip: float = 1.0
    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None
    eval_every: int = 200
    eval_tokens: int = 1_000_000  # validation during training reads at most this many tokens
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    encoding_errors: str = "strict"  # "replace": invalid UTF-8 becomes U+FFFD, counted

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(
            self.encoding_errors in ENCODING_ERRORS,
            "encoding_errors",
            f"must be one of {', '.join(ENCODING_ERRORS)}",
        )
        c.require(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        c.require(self.tokenizer in TOKENIZERS, "tokenizer", f"must be one of {', '.join(TOKENIZERS)}")
        c.require(self.vocab_size >= 2, "vocab_size", f"must be at least 2 (got {self.vocab_size})")
        c.require(
            0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1) (got {self.val_fraction})"
        )
        c.require(self.batch_size >= 1, "batch_size", f"must be at least 1 (got {self.batch_size})")
        c.require(self.bptt >= 1, "bptt", f"must be at least 1 (got {self.bptt})")
        c.require(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be a positive number (got {self.lr})")
        c.require(
            self.lr_schedule in LR_SCHEDULES, "lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}"
        )
        c.require(self.warmup_steps >= 0, "warmup_steps", f"must be 0 or more (got {self.warmup_steps})")
        c.require(self.weight_decay >= 0, "weight_decay", f"must be 0 or more (got {self.weight_decay})")
        c.require(self.clip > 0, "clip", f"must be positive (got {self.clip})")
        c.require(self.epochs >= 1, "epochs", f"must be at least 1 (got {self.epochs})")
        c.require(
            self.max_steps is None or self.max_steps >= 1,
            "max_steps",
            f"must be at least 1 (got {self.max_steps})",
        )
        c.require(
            self.max_time is None or self.max_time > 0,
            "max_time",
            f"must be a positive number of seconds (got {self.max_time})",
        )
        c.require(self.eval_every >= 1, "eval_every", f"must be at least 1 (got {self.eval_every})")
        c.require(self.eval_tokens >= 2, "eval_tokens", f"must be at least 2 (got {self.eval_tokens})")
        c.require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        c.raise_if_any()


@dataclass
class SampleConfig(_Serializable):
    """How to generate text from a trained model."""

    prime: str = ""
    length: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 1
    seed: int | None = None
    stop: str | None = None
    device: str = "auto"
    min_p: float | None = None  # keep tokens at least this fraction as likely as the top one
    repetition_penalty: float = 1.0  # 1 is off; above 1 makes recently seen tokens less likely
    repetition_window: int = 64  # how many recent tokens (prime included) the penalty looks at
    no_repeat_ngram: int | None = None  # never repeat an n-gram of this many tokens
    beam_width: int | None = None  # beam search instead of sampling: one deterministic sample

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.length >= 0, "length", f"must be 0 or more (got {self.length})")
        c.require(
            self.temperature >= 0 and math.isfinite(self.temperature),
            "temperature",
            f"must be 0 (greedy) or more (got {self.temperature})",
        )
        c.require(self.top_k is None or self.top_k >= 1, "top_k", f"must be at least 1 (got {self.top_k})")
        c.require(
            self.top_p is None or 0.0 < self.top_p <= 1.0, "top_p", f"must be in (0, 1] (got {self.top_p})"
        )
        c.require(self.num_samples >= 1, "num_samples", f"must be at least 1 (got {self.num_samples})")
        c.require(self.stop is None or self.stop != "", "stop", "must not be empty")
        c.require(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        c.require(
            self.min_p is None or 0.0 < self.min_p <= 1.0, "min_p", f"must be in (0, 1] (got {self.min_p})"
        )
        c.require(
            self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
            "repetition_penalty",
            f"must be a positive number, 1 means off (got {self.repetition_penalty})",
        )
        c.require(
            self.repetition_window >= 1,
            "repetition_window",
            f"must be at least 1 (got {self.repetition_window})",
        )
        c.require(
            self.no_repeat_ngram is None or self.no_repeat_ngram >= 1,
            "no_repeat_ngram",
            f"must be at least 1 (got {self.no_repeat_ngram})",
        )
        c.require(
            self.beam_width is None or self.beam_width >= 1,
            "beam_width",
            f"must be at least 1 (got {self.beam_width})",
        )
        c.require(
            self.beam_width is None or self.num_samples == 1,
            "beam_width",
            "gives one deterministic sample; leave out --num-samples",
        )
        c.raise_if_any()
