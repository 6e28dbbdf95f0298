"""Typed settings, validated on construction, and the choice lists the command line uses.

Each field has the name of its command-line flag (``hidden_size`` <-> ``--hidden-size``), so an
error can name the flag to change, and the CLI builds its options from these fields: a choice list,
a default or a help text is written once, here. All problems with a config are reported at once.

The model's settings come in two steps: ``ModelShape`` is what the user chooses (cell, sizes,
dropout); ``ModelConfig`` adds ``vocab_size``, known once the tokenizer is, and is what a
checkpoint stores.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from charlstm.errors import ConfigError

TOKENIZERS = ("char", "byte", "bpe", "unigram")
DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CELLS = ("lstm", "gru", "rnn")
SIZES = ("auto", "fixed")
ENCODING_ERRORS = ("strict", "replace")
# What ``inspect --show`` can colour by, per cell, in display order (``cells.trace`` records each).
QUANTITIES = {
    "lstm": ("cell", "hidden", "forget", "input", "output", "candidate"),
    "gru": ("hidden", "update", "reset", "candidate"),
    "rnn": ("hidden",),
}
SHOW_CHOICES = tuple(dict.fromkeys(q for names in QUANTITIES.values() for q in names))
SENTENCEPIECE_VOCAB_SIZE = 512
EVAL_EVERY_TOKENS = 819_200  # the default --eval-every, in training tokens (800 steps of 16 x 64)  # --vocab-size when bpe/unigram is asked for without one


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
    """Collects every problem so the user can fix them all in one go."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def require(self, ok: bool, name: str, message: str) -> None:
        if not ok:
            self.problems.append(f"{flag(name)} {message}")

    def choice(self, value: str, name: str, choices: tuple[str, ...]) -> None:
        self.require(value in choices, name, f"must be one of {', '.join(choices)} (got {value!r})")

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


@dataclass(kw_only=True)
class ModelShape(_Serializable):
    """The language model the user asks for: embedding -> stacked recurrent layers -> dropout ->
    projection. Everything but the vocabulary, which comes from the tokenizer."""

    cell: str = setting(
        "lstm", "Recurrent cell: LSTM, or GRU / tanh RNN for comparison.", choices=CELLS, fixed=True
    )
    embedding_dim: int = setting(64, "Embedding size.", fixed=True)
    hidden_size: int = setting(512, "Units per recurrent layer.", fixed=True)
    num_layers: int = setting(1, "Stacked recurrent layers.", fixed=True)
    dropout: float = setting(0.2, "Dropout between layers and before the projection.")
    tie_weights: bool = setting(
        False, "Share embedding and projection weights (needs --embedding-dim = --hidden-size).", fixed=True
    )

    def __post_init__(self) -> None:
        c = _Checks()
        self._check(c)
        c.raise_if_any()

    def _check(self, c: _Checks) -> None:
        c.choice(self.cell, "cell", CELLS)
        c.require(self.embedding_dim >= 1, "embedding_dim", f"must be at least 1 (got {self.embedding_dim})")
        c.require(self.hidden_size >= 1, "hidden_size", f"must be at least 1 (got {self.hidden_size})")
        c.require(self.num_layers >= 1, "num_layers", f"must be at least 1 (got {self.num_layers})")
        c.require(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1) (got {self.dropout})")
        c.require(
            not self.tie_weights or self.embedding_dim == self.hidden_size,
            "tie_weights",
            f"needs --embedding-dim equal to --hidden-size (got {self.embedding_dim} and {self.hidden_size})",
        )


@dataclass(kw_only=True)
class ModelConfig(ModelShape):
    """A ``ModelShape`` with its vocabulary: everything needed to build the model."""

    vocab_size: int

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.require(self.vocab_size >= 2, "vocab_size", f"must be at least 2 (got {self.vocab_size})")

    @classmethod
    def of(cls, shape: ModelShape, vocab_size: int) -> ModelConfig:
        return cls(vocab_size=vocab_size, **shape.to_dict())

    @property
    def shape(self) -> ModelShape:
        return ModelShape.from_dict(self.to_dict())


@dataclass
class TrainConfig(_Serializable):
    """How to train: tokens, data layout, optimisation, stopping, evaluation and hardware."""

    tokenizer: str = setting("char", "Token unit.", choices=TOKENIZERS, fixed=True)
    # The vocabulary's size is a setting only for SentencePiece; char and byte fix their own.
    vocab_size: int | None = setting(
        None, f"Vocabulary size for bpe/unigram [default: {SENTENCEPIECE_VOCAB_SIZE}].", fixed=True
    )
    val_fraction: float = setting(0.1, "Last fraction of the text held out for validation.", fixed=True)
    batch_size: int = setting(16, "Parallel streams per step.", fixed=True)
    bptt: int = setting(64, "Window length: steps of backpropagation through time.", fixed=True)
    variable_bptt: bool = setting(
        False,
        "Draw each window's length around --bptt, anew each epoch, so the cuts move (awd-lstm-lm); "
        "the learning rate scales with the length.",
        fixed=True,
    )
    lr: float = setting(6e-3, "Peak learning rate (AdamW).")
    lr_schedule: str = setting("cosine", "Learning-rate schedule.", choices=LR_SCHEDULES)
    warmup_steps: int = setting(20, "Linear warm-up steps.")
    final_lr_ratio: float = setting(0.0, "Where the cosine schedule ends, as a fraction of --lr.")
    weight_decay: float = setting(0.01, "AdamW weight decay (weight matrices only).")
    clip: float = setting(1.0, "Gradient-norm clipping threshold.")
    epochs: int = setting(10, "Stop after this many passes over the text...")
    max_steps: int | None = setting(None, "...or this many steps...")
    max_time: float | None = setting(None, "...or this many seconds, whichever comes first.")
    size: str = setting(
        "auto",
        "With --max-time, auto chooses the model's layers, units and dropout for the budget from "
        "this machine's measured speed and the text's size (shape options you give are kept); "
        "fixed: the default shape.",
        choices=SIZES,
    )
    eval_every: int | None = setting(
        None,
        "Validate and checkpoint every N steps (and at the end) [default: every ~800,000 training "
        "tokens: 800 steps at batch 16 x bptt 64].",
    )
    eval_tokens: int = setting(1_000_000, "Validate on at most this many held-out tokens.")
    patience: int | None = setting(
        None, "Stop when the validation loss has not improved for this many evaluations."
    )
    sample_every: int | None = setting(
        None,
        "Write a short sample every N steps (under the progress bar and into RUN/samples.txt) "
        "[default: at each evaluation when stderr is a terminal, else none].",
    )
    samples: bool = setting(True, "--no-samples: no samples while training, whatever else is set.")
    tensorboard: bool = setting(
        False, "Write TensorBoard event files into RUN/tensorboard/ (needs: pip install tensorboard)."
    )
    seed: int = setting(1337, "Random seed (a CPU run with the same seed repeats exactly).", fixed=True)
    device: str = setting("auto", "Where to train.", choices=DEVICES)
    precision: str = setting(
        "auto",
        "auto: bf16 autocast where the hardware runs it fast, fp16 on older GPUs, else fp32.",
        choices=PRECISIONS,
    )
    encoding_errors: str = setting(
        "strict",
        "Invalid UTF-8: stop with its byte offset, or replace it with U+FFFD (counted).",
        choices=ENCODING_ERRORS,
        fixed=True,
    )

    def __post_init__(self) -> None:
        if self.eval_every is None and self.batch_size >= 1 and self.bptt >= 1:
            # Validation costs the same whatever the batch: space it by tokens trained, not steps.
            self.eval_every = max(1, round(EVAL_EVERY_TOKENS / (self.batch_size * self.bptt)))
        c = _Checks()
        c.choice(self.encoding_errors, "encoding_errors", ENCODING_ERRORS)
        c.choice(self.precision, "precision", PRECISIONS)
        c.choice(self.tokenizer, "tokenizer", TOKENIZERS)
        c.require(
            self.vocab_size is None or self.vocab_size >= 2,
            "vocab_size",
            f"must be at least 2 (got {self.vocab_size})",
        )
        c.require(
            0.0 < self.val_fraction < 1.0, "val_fraction", f"must be in (0, 1) (got {self.val_fraction})"
        )
        c.require(self.batch_size >= 1, "batch_size", f"must be at least 1 (got {self.batch_size})")
        c.require(self.bptt >= 1, "bptt", f"must be at least 1 (got {self.bptt})")
        c.require(self.lr > 0 and math.isfinite(self.lr), "lr", f"must be a positive number (got {self.lr})")
        c.choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        c.choice(self.size, "size", SIZES)
        c.require(self.warmup_steps >= 0, "warmup_steps", f"must be 0 or more (got {self.warmup_steps})")
        c.require(
            0.0 <= self.final_lr_ratio <= 1.0, "final_lr_ratio", f"must be in [0, 1] (got {self.final_lr_ratio})"
        )
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
        c.require(
            self.eval_every is None or self.eval_every >= 1, "eval_every", f"must be at least 1 (got {self.eval_every})"
        )
        c.require(self.eval_tokens >= 2, "eval_tokens", f"must be at least 2 (got {self.eval_tokens})")
        c.require(
            self.patience is None or self.patience >= 1,
            "patience",
            f"must be at least 1 (got {self.patience})",
        )
        c.require(
            self.sample_every is None or self.sample_every >= 1,
            "sample_every",
            f"must be at least 1 (got {self.sample_every})",
        )
        c.choice(self.device, "device", DEVICES)
        c.raise_if_any()

    @property
    def sentencepiece_vocab_size(self) -> int:
        return self.vocab_size or SENTENCEPIECE_VOCAB_SIZE


# Settings a resumed run must keep (the others, --lr, --max-steps, --dropout, --device, ... may
# change on --resume): marked ``fixed`` on their fields above.
FIXED_ON_RESUME = fixed_on_resume(ModelShape, TrainConfig)


@dataclass
class EvalConfig(_Serializable):
    """How ``charlstm eval`` runs the model over a file."""

    batch_size: int = setting(64, "Parallel streams (each reads the text before its part first).")
    bptt: int | None = setting(None, "Window length [default: the checkpoint's].")
    adapt: bool = setting(
        False,
        "Also score with dynamic evaluation: the weights keep learning from the text already "
        "scored (one stream; slower). Reports both figures.",
    )
    device: str = setting("auto", "Where to run.", choices=DEVICES)
    encoding_errors: str = setting(
        "strict",
        "Invalid UTF-8: stop with its byte offset, or replace it with U+FFFD (counted).",
        choices=ENCODING_ERRORS,
    )

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(self.batch_size >= 1, "batch_size", f"must be at least 1 (got {self.batch_size})")
        c.require(self.bptt is None or self.bptt >= 1, "bptt", f"must be at least 1 (got {self.bptt})")
        c.choice(self.device, "device", DEVICES)
        c.choice(self.encoding_errors, "encoding_errors", ENCODING_ERRORS)
        c.raise_if_any()


@dataclass
class AdaptConfig(_Serializable):
    """Dynamic evaluation (``eval --adapt``, ``sample --adapt-to``): how the weights follow a text."""

    adapt_lr: float = setting(0.1, "Learning rate of the adapting SGD steps (each step clipped to norm 1).")
    adapt_decay: float = setting(0.0, "Pull towards the trained weights after each step (0: none, 1: undo it).")
    adapt_bptt: int = setting(64, "Tokens scored per adapting step.")

    def __post_init__(self) -> None:
        c = _Checks()
        c.require(
            self.adapt_lr > 0 and math.isfinite(self.adapt_lr),
            "adapt_lr",
            f"must be a positive number (got {self.adapt_lr})",
        )
        c.require(0.0 <= self.adapt_decay <= 1.0, "adapt_decay", f"must be in [0, 1] (got {self.adapt_decay})")
        c.require(self.adapt_bptt >= 1, "adapt_bptt", f"must be at least 1 (got {self.adapt_bptt})")
        c.raise_if_any()


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


MEMORY_TASKS = ("recall", "copy")  # the long-range experiment's tasks (``memory_tasks``)


@dataclass(frozen=True)
class ExperimentConfig(_Serializable):
    """The long-range experiment (``experiment.py``): which models, how long each trains."""

    tasks: tuple[str, ...] = setting(MEMORY_TASKS, "Comma-separated: recall, copy.")
    distances: tuple[int, ...] = setting((10, 30, 100), "Comma-separated distances d, for every task.")
    seeds: int = setting(3, "Seeds per cell and distance (0, 1, ...).")
    budget: int = setting(
        1000,
        "Training steps per model; a model not solved by then trains on to twice as many (the doubling check).",
    )
    hidden_size: int = setting(64, "The LSTM's hidden size; the GRU and RNN get as many parameters.")
    lr: float = setting(1e-2, "Adam's learning rate, for every cell.")
    curriculum: bool = setting(
        False, "One model per seed climbs the distances in order, moving on when it solves one."
    )
    jobs: int = setting(0, "Processes on a CPU; 0: one per core this process may use.")
    batch_size: int = 32
    embedding_dim: int = 16
    clip: float = 1.0
    solved_at: float = 0.99  # held-out accuracy that counts as solved
    eval_every: int = 50
    eval_sequences: int = 256  # for the solved check; the final accuracy uses 4 x as many, fresh
    # The LSTM runs twice: with charlstm's forget-gate bias of 1 (the usual choice) and with a
    # larger one, which starts the cell path open (f = 0.95 instead of 0.73 per step).
    forget_biases: tuple[float, ...] = (1.0, 3.0)

    def __post_init__(self) -> None:
        c = _Checks()
        unknown = [t for t in self.tasks if t not in MEMORY_TASKS]
        c.require(
            bool(self.tasks) and not unknown,
            "tasks",
            f"must be some of {', '.join(MEMORY_TASKS)} (got {', '.join(self.tasks) or 'none'})",
        )
        c.require(
            bool(self.distances) and all(1 <= d <= 100_000 for d in self.distances),
            "distances",
            f"must be whole numbers from 1 to 100000 (got {', '.join(map(str, self.distances)) or 'none'})",
        )
        c.require(self.seeds >= 1, "seeds", f"must be at least 1 (got {self.seeds})")
        c.require(self.budget >= 1, "budget", f"must be at least 1 (got {self.budget})")
        c.require(
            1 <= self.hidden_size <= 4096, "hidden_size", f"must be from 1 to 4096 (got {self.hidden_size})"
        )
        c.require(self.lr > 0, "lr", f"must be above 0 (got {self.lr})")
        c.require(self.jobs >= 0, "jobs", f"must be at least 0 (got {self.jobs})")
        c.require(
            self.eval_every >= 1 and self.batch_size >= 1,
            "eval_every",
            "and the batch size must be at least 1",
        )
        c.require(0 < self.solved_at <= 1, "solved_at", f"must be in (0, 1] (got {self.solved_at})")
        c.raise_if_any()

    def variants(self) -> list[tuple[str, str, float | None]]:
        """(model, cell, forget-gate bias) of every model compared."""
        lstms = [("LSTM" if b == 1.0 else f"LSTM, forget bias {b:g}", "lstm", b) for b in self.forget_biases]
        return [*lstms, ("GRU", "gru", None), ("RNN", "rnn", None)]

    @classmethod
    def quick(cls, **changes) -> ExperimentConfig:
        """A run of seconds, for tests: short distances, small budgets, small models."""
        small = {"distances": (5, 20), "budget": 100, "batch_size": 16, "hidden_size": 16, "eval_every": 25}
        return cls(**{**small, "eval_sequences": 128, **changes})
