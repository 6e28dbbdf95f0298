"""Typed settings, validated on construction, and the choice lists the command line uses.

Each field has the name of its command-line flag (``hidden_size`` <-> ``--hidden-size``), so an
error can name the flag to change, and the CLI builds its options from these fields: a choice list,
a default or a help text is written once, here. All problems with a config are reported at once.

The model's settings come in two steps: ``ModelShape`` is what the user chooses (cell, sizes,
dropout); ``ModelConfig`` adds ``vocab_size``, known once the tokenizer is, and is what a
checkpoint stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlstm.config.fields import (  # noqa: F401 (flag, differences: re-exported for the modules that use them)
    _Checks,
    _Serializable,
    differences,
    fixed_on_resume,
    flag,
    setting,
)
from charlstm.errors import ConfigError

TOKENIZERS = ("char", "byte", "bpe", "unigram")
DEVICES = ("auto", "cpu", "cuda", "mps")
LR_SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# How generation holds the recurrent weights (``stepper.TokenStepper``): as trained, or lighter.
WEIGHTS = ("fp32", "int8", "bf16")
CELLS = ("lstm", "ln-lstm", "gru", "rnn")
SIZES = ("auto", "fixed")
ENCODING_ERRORS = ("strict", "replace")
ADAPT_METHODS = ("rms", "sgd")
# Each dynamic-evaluation method's (--adapt-lr, --adapt-decay, --adapt-tune) when not given.
ADAPT_DEFAULTS = {"sgd": (0.1, 0.0, 0.0, 0), "rms": (0.002, 0.01, 0.5, 300)}  # lr, decay, tune, prior
# What ``inspect --show`` can colour by, per cell, in display order (``cells.trace`` records each).
QUANTITIES = {
    "lstm": ("cell", "hidden", "forget", "input", "output", "candidate"),
    "ln-lstm": ("cell", "hidden", "forget", "input", "output", "candidate"),
    "gru": ("hidden", "update", "reset", "candidate"),
    "rnn": ("hidden",),
}
SHOW_CHOICES = tuple(dict.fromkeys(q for names in QUANTITIES.values() for q in names))
SENTENCEPIECE_VOCAB_SIZE = 512
DEFAULT_EPOCHS = 10  # --epochs when neither it nor --max-time is given
EVAL_EVERY_TOKENS = 819_200  # the default --eval-every, in training tokens (800 steps of 16 x 64)  # --vocab-size when bpe/unigram is asked for without one


@dataclass(kw_only=True)
class ModelShape(_Serializable):
    """The language model the user asks for: embedding -> stacked recurrent layers -> dropout ->
    projection. Everything but the vocabulary, which comes from the tokenizer."""

    cell: str = setting(
        "lstm", "Recurrent cell: LSTM; ln-lstm, the LSTM with layer normalisation inside the cell (C++ "
        "recurrence, built on first use where a compiler is); or GRU / tanh RNN for comparison. Not "
        "given, with --max-time and --size auto: ln-lstm on a CPU where its recurrence builds.", choices=CELLS, fixed=True
    )
    embedding_dim: int = setting(64, "Embedding size.", fixed=True)
    hidden_size: int = setting(512, "Units per recurrent layer.", fixed=True)
    num_layers: int = setting(1, "Stacked recurrent layers.", fixed=True)
    dropout: float = setting(0.2, "Dropout between layers and before the projection.")
    weight_drop: float = setting(
        0.0, "Weight drop (AWD-LSTM's DropConnect): the share of the recurrent matrices' weights zeroed "
        "for each training window; 0: off.",
    )
    tie_weights: bool = setting(
        False, "Share embedding and projection weights (needs --embedding-dim = --hidden-size).", fixed=True
    )

    def __post_init__(self) -> None:
        c = _Checks(self)
        self._check(c)
        c.raise_if_any()

    def _check(self, c: _Checks) -> None:
        c.choice("cell", CELLS)
        c.at_least("embedding_dim", 1)
        c.at_least("hidden_size", 1)
        c.at_least("num_layers", 1)
        c.within("dropout", "[0, 1)")
        c.within("weight_drop", "[0, 1)")
        c.check(
            "tie_weights",
            lambda tied: not tied or self.embedding_dim == self.hidden_size,
            f"needs --embedding-dim equal to --hidden-size (got {self.embedding_dim} and {self.hidden_size})",
            got=False,
        )


@dataclass(kw_only=True)
class ModelConfig(ModelShape):
    """A ``ModelShape`` with its vocabulary: everything needed to build the model."""

    vocab_size: int

    def _check(self, c: _Checks) -> None:
        super()._check(c)
        c.at_least("vocab_size", 2)

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
    lr_schedule: str = setting("linear", "Learning-rate schedule.", choices=LR_SCHEDULES)
    warmup_steps: int = setting(20, "Linear warm-up steps.")
    final_lr_ratio: float = setting(0.0, "Where the decay ends, as a fraction of --lr.")
    weight_decay: float = setting(0.01, "AdamW weight decay (weight matrices only).")
    clip: float = setting(1.0, "Gradient-norm clipping threshold.")
    ema: float | None = setting(
        None,
        "Keep a moving average of the weights with this decay per step (e.g. 0.999): validation and "
        "best.pt use the averaged weights; last.pt keeps the raw ones and the average [default: off].",
    )
    epochs: int | None = setting(
        None,
        f"Stop after this many passes over the text [default: {DEFAULT_EPOCHS}; with --max-time, as many as "
        "the budget holds: the budget is the plan]...",
    )
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
        "auto: bf16 autocast where the hardware runs it fast (GPUs of compute capability 8.0 on, "
        "CPUs with AMX or AVX-512-bf16), fp16 with loss scaling on 7.x GPUs (V100, T4), else fp32.",
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
        c = _Checks(self)
        c.choice("encoding_errors", ENCODING_ERRORS)
        c.choice("precision", PRECISIONS)
        c.choice("tokenizer", TOKENIZERS)
        c.at_least("vocab_size", 2)
        c.within("val_fraction", "(0, 1)")
        c.at_least("batch_size", 1)
        c.at_least("bptt", 1)
        c.positive_number("lr")
        c.choice("lr_schedule", LR_SCHEDULES)
        c.choice("size", SIZES)
        c.zero_or_more("warmup_steps")
        c.within("final_lr_ratio", "[0, 1]")
        c.zero_or_more("weight_decay")
        c.check("clip", lambda clip: clip > 0, "must be positive")
        c.within("ema", "(0, 1)")
        c.at_least("epochs", 1)
        c.at_least("max_steps", 1)
        c.check("max_time", lambda seconds: seconds > 0, "must be a positive number of seconds")
        c.at_least("eval_every", 1)
        c.at_least("eval_tokens", 2)
        c.at_least("patience", 1)
        c.at_least("sample_every", 1)
        c.choice("device", DEVICES)
        c.raise_if_any()

    @property
    def sentencepiece_vocab_size(self) -> int:
        return self.vocab_size or SENTENCEPIECE_VOCAB_SIZE

    @property
    def epoch_limit(self) -> int | None:
        """The passes that end the run: --epochs as given; else none under --max-time (the budget
        ends it), and ``DEFAULT_EPOCHS`` without."""
        if self.epochs is not None:
            return self.epochs
        return None if self.max_time is not None else DEFAULT_EPOCHS


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
        c = _Checks(self)
        c.at_least("batch_size", 1)
        c.at_least("bptt", 1)
        c.choice("device", DEVICES)
        c.choice("encoding_errors", ENCODING_ERRORS)
        c.raise_if_any()


@dataclass
class AdaptConfig(_Serializable):
    """Dynamic evaluation (``eval --adapt``, ``sample --adapt-to``): how the weights follow a text."""

    adapt_method: str = setting(
        "rms",
        "How the weights follow the text: rms (Krause et al. 2018: each step divided by the root mean "
        "square of the gradients seen so far, the pull back scaled per weight) or sgd (a plain step "
        "clipped to norm 1).",
        choices=ADAPT_METHODS,
    )
    adapt_lr: float | None = setting(
        None, "Learning rate of the adapting steps (where it starts, with --adapt-tune) [default: 0.1 for sgd, "
        "0.002 for rms]."
    )
    adapt_decay: float | None = setting(
        None,
        "Pull towards the trained weights after each step (0: none; 1 undoes an sgd step; where it starts, "
        "with --adapt-tune) [default: 0 for sgd, 0.01 for rms].",
    )
    adapt_tune: float | None = setting(
        None,
        "How fast the learning rate and the pull back follow the text: before each step each is multiplied "
        "by exp(-T x cos), T this value and cos the cosine between the segment's gradient and the way a larger "
        "value would have moved the weights (a hypergradient); 0 keeps them fixed [default: 0 for sgd, 0.5 for rms].",
    )
    adapt_prior: int | None = setting(
        None,
        "rms: how many segments the training's mean square gradients count for in the step's normaliser "
        "(Krause et al.: the checkpoint's AdamW second moments, scaled to the text's gradients); 0, "
        "or a model without them (an exported folder), uses the text's alone [default: 0 for sgd, 300 for rms].",
    )
    adapt_bptt: int = setting(64, "Tokens scored per adapting step.")
    adapt_depth: int = setting(
        4, "Steps back in time each token's gradient goes within its window (an LSTM's; at least "
        "--adapt-bptt: the whole window, as Krause et al.; other cells always go the whole window).")

    def __post_init__(self) -> None:
        c = _Checks(self)
        c.choice("adapt_method", ADAPT_METHODS)
        c.positive_number("adapt_lr")
        c.within("adapt_decay", "[0, 1]")
        c.within("adapt_tune", "[0, 10]")
        c.within("adapt_prior", "[0, 1000000]")
        c.at_least("adapt_bptt", 1)
        c.zero_or_more("adapt_depth")
        c.raise_if_any()
        defaults = ADAPT_DEFAULTS.get(self.adapt_method, ADAPT_DEFAULTS["sgd"])
        if self.adapt_lr is None:
            self.adapt_lr = defaults[0]
        if self.adapt_decay is None:
            self.adapt_decay = defaults[1]
        if self.adapt_tune is None:
            self.adapt_tune = defaults[2]
        if self.adapt_prior is None:
            self.adapt_prior = defaults[3]


@dataclass
class CacheConfig(_Serializable):
    """The neural cache (Grave et al. 2017) of ``eval`` and ``score``: the model's distribution
    mixed with one that copies what followed similar recent states."""

    cache_size: int = setting(
        0, "Recent tokens the cache remembers (their last-layer state and the token that followed); 0: no cache."
    )
    cache_theta: float | None = setting(
        None,
        "How sharply the cache prefers the most similar states [default: chosen as the text is read, "
        "from 0.03, 0.1, 0.3, 1, 3].",
    )
    cache_lambda: float | None = setting(
        None,
        "The cache's share of the mixture [default: chosen as the text is read, from 0.05, 0.1, 0.2, 0.35, "
        "0.5, 0.7, 0.85, 0.95].",
    )

    def __post_init__(self) -> None:
        c = _Checks(self)
        c.zero_or_more("cache_size")
        c.positive_number("cache_theta")
        c.within("cache_lambda", "[0, 1)")
        c.raise_if_any()


# The adapting flags, named in "... need --adapt" (eval) and "... need --adapt-to" (sample).
_ADAPT_FLAGS = [flag(name) for name in AdaptConfig.field_names()]
ADAPT_NEEDS = f"{', '.join(_ADAPT_FLAGS[:-1])} and {_ADAPT_FLAGS[-1]}"


CACHE_NEEDS_SIZE = "--cache-theta and --cache-lambda need --cache-size (above 0)"


def check_cache(config: CacheConfig) -> None:
    """--cache-theta and --cache-lambda mean nothing without a cache."""
    if config.cache_size == 0 and (config.cache_theta is not None or config.cache_lambda is not None):
        raise ConfigError(CACHE_NEEDS_SIZE)


def reading_configs(adapt: bool, cache_size: int, cache_theta, cache_lambda, **adapt_settings):
    """The ``AdaptConfig`` (None without ``adapt``) and ``CacheConfig`` of an ``evaluate`` or
    ``compress`` call, checked: an ``adapt_*`` setting given (not None) without ``adapt`` is one line."""
    given = {k: v for k, v in adapt_settings.items() if v is not None}
    if given and not adapt:
        raise ConfigError(f"{ADAPT_NEEDS} need --adapt")
    cache = CacheConfig(cache_size=cache_size, cache_theta=cache_theta, cache_lambda=cache_lambda)
    check_cache(cache)
    return (AdaptConfig(**given) if adapt else None), cache


from charlstm.config.sampling import SampleConfig  # noqa: E402 (it uses the choice lists above)
