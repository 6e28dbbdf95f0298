"""The public Python API: load a trained model and use it, train or resume a run, read a run.

    import charlstm
    lm = charlstm.load("checkpoints/my_text")                # a run directory or a .pt file
    text = lm.generate("ROMEO:", length=300, seed=1)           # the new text, prime not included
    for piece in lm.stream("ROMEO:", length=300): ...          # the same text, as it is written
    result = charlstm.train("my_text.txt", out="checkpoints/x", max_time=120, progress=True)

Settings are keyword arguments named as the command-line flags (``--top-k`` -> ``top_k``),
validated by the config dataclasses of ``charlstm.config``: a bad value raises ``ConfigError``
with the message the command line prints. Every error a user can cause is a ``CharlstmError``;
nothing here prints (``progress=True`` asks ``charlstm.display`` for a bar) or exits. The
command line (``charlstm.cli``) is built on these calls.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.config import (
    ADAPT_NEEDS,
    AdaptConfig,
    CacheConfig,
    EvalConfig,
    ModelConfig,
    ModelShape,
    SampleConfig,
    TrainConfig,
    check_cache,
)
from charlstm.errors import ConfigError
from charlstm.runs.checkpoint import ModelInfo
from charlstm.runs.info import RunSummary
from charlstm.training.trainer import TrainResult

__all__ = [
    "Adaptation",
    "Completion",
    "Model",
    "ModelInfo",
    "Session",
    "held_out_text",
    "load",
    "read_run",
    "resume",
    "text_source",
    "train",
]

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------------- records


@dataclass
class Completion:
    """One sample with what made it: ``generate(..., details=True)``; ``to_dict()`` is the record
    ``charlstm sample --json`` prints (it adds ``adapted_to`` after ``sample --adapt-to``)."""

    text: str  # the new text, prime not included
    prime: str
    seed: int  # the seed used (drawn when none was given): the same settings and seed repeat it
    temperature: float
    tokens: int  # tokens drawn
    mean_logprob: float  # mean log-probability per token drawn, nats (nan for none)
    settings: dict  # every other sampling setting, by its flag's name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Adaptation:
    """How ``Model.adapt`` went: the text, the settings, and the loss while adapting."""

    text: str  # the text's name (its path)
    loss: float  # mean nats per token while adapting
    tokens: int
    seconds: float
    settings: AdaptConfig


# --------------------------------------------------------------------------------- the handle


def load(path: PathLike, *, device: str = "auto", weights: str = "fp32") -> Model:
    """The model in ``path`` (a run directory: its best checkpoint, else its last; a .pt file;
    or a folder ``charlstm export --format safetensors`` wrote), checked before anything is
    built, on ``device`` (auto: a CUDA GPU, then Apple MPS, then the CPU). ``weights``: how the
    recurrent weights are held when writing and scoring text (fp32 as trained; int8 or bf16,
    lighter: ``--weights``); a call's own ``weights=`` overrides it."""
    from charlstm.hardware import select_device
    from charlstm.runs.checkpoint import load_model, model_info

    SampleConfig(device=device, weights=weights)  # an unknown name: the CLI's message
    torch_device = select_device(device)
    module, tokenizer, payload = load_model(path, torch_device)
    return Model(module, tokenizer, model_info(module, tokenizer, payload), Path(path), torch_device, device, weights)


class Model:
    """A trained model, ready to write and measure text (``load`` makes one).

    ``module`` is the ``torch.nn.Module``; ``tokenizer``, ``config`` (``ModelConfig``),
    ``device``, ``path`` and ``info`` (``ModelInfo``) describe it."""

    def __init__(
        self, module, tokenizer, info: ModelInfo, path: Path, device: torch.device, device_setting: str,
        weights: str | None = None,
    ):
        self.module = module
        self.weights = weights  # fp32, int8 or bf16: the default of every call
        self.tokenizer = tokenizer
        self.path = path
        self.device = device
        self._device_setting = device_setting  # as asked for ("auto"): what --json records
        self.info = info

    @property
    def config(self) -> ModelConfig:
        return self.module.config

    def __repr__(self) -> str:
        c = self.config
        return (
            f"<charlstm.Model {self.path} {c.cell} {c.num_layers}x{c.hidden_size}, "
            f"{self.info.tokenizer} ({self.info.vocab_size}), {self.info.parameters:,} parameters, {self.device}>"
        )

    # ------------------------------------------------------------------------------ generating

    def _sample_config(self, prime: str, settings: dict) -> SampleConfig:
        from charlstm.generation.sampling import encode_prime

        if settings.get("weights") is None:
            settings["weights"] = self.weights
        config = SampleConfig(prime=prime, device=self._device_setting, **settings)
        encode_prime(self.tokenizer, prime)  # characters the vocabulary lacks: one clear line
        if config.seed is None:
            config = dataclasses.replace(config, seed=secrets.randbelow(2**31))
        return config

    def generate(
        self,
        prime: str = "",
        *,
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        beam_width: int | None = None,
        num_samples: int = 1,
        seed: int | None = None,
        stop: str | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        details: bool = False,
    ) -> str | list[str] | Completion | list[Completion]:
        """New text after ``prime`` (not included): a str, or a list of ``num_samples`` of them
        generated together as one batch; with ``details``, ``Completion`` records instead.
        ``beam_width``: the most likely continuation of ``length`` tokens (one, deterministic).
        ``weights``: how the recurrent weights are held while generating (fp32, int8, bf16;
        None: as ``load`` was given). ``cache_size``: mix a neural cache of the last N tokens
        into every draw (``cache_theta``, ``cache_lambda``: chosen on the prime when None), so
        the model copies more of the prime and of what it wrote.
        The same settings and ``seed`` give the same text as ``charlstm sample``."""
        settings = dict(locals())
        for name in ("self", "prime", "details"):
            del settings[name]
        config = self._sample_config(prime, settings)
        if config.beam_width is not None:
            texts, tokens, logprobs = self._beam(config)
        else:
            texts, tokens, logprobs = self._sampled(config)
        if not details:
            return texts[0] if num_samples == 1 else texts
        rest = {k: v for k, v in config.to_dict().items() if k not in ("prime", "seed")}
        completions = [
            Completion(text, prime, config.seed, config.temperature, n, lp, dict(rest))
            for text, n, lp in zip(texts, tokens, logprobs)
        ]
        return completions[0] if num_samples == 1 else completions

    def stream(
        self,
        prime: str = "",
        *,
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        beam_width: int | None = None,
        seed: int | None = None,
        stop: str | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
    ) -> Iterator[str]:
        """The text ``generate`` would return (one sample), in pieces as it is written. The
        settings are checked now; the text is made as the iterator is read. Beam search knows its
        text only at the end: one piece."""
        settings = dict(locals())
        for name in ("self", "prime"):
            del settings[name]
        config = self._sample_config(prime, settings)
        if config.beam_width is not None:
            return iter(self._beam(config)[0])
        from charlstm.generation.sampling import generate

        generation = generate(self.module, self.tokenizer, config, self.device)
        return (pieces[0] for pieces in generation if pieces[0])

    def _sampled(self, config: SampleConfig):
        from charlstm.generation.sampling import generate

        generation = generate(self.module, self.tokenizer, config, self.device)
        texts = [[] for _ in range(config.num_samples)]
        for pieces in generation:
            for buffer, piece in zip(texts, pieces):
                buffer.append(piece)
        return ["".join(t) for t in texts], generation.tokens, generation.mean_logprob

    def _beam(self, config: SampleConfig):
        """The most likely continuation of ``config.length`` tokens, cut at ``stop``."""
        from charlstm.generation.beam import beam_search
        from charlstm.generation.sampling import TextStream, encode_prime

        ids, logprob = beam_search(
            self.module, self.tokenizer, encode_prime(self.tokenizer, config.prime), config.length,
            config.beam_width, self.device, no_repeat_ngram=config.no_repeat_ngram,
        )
        table = self.tokenizer.token_bytes()
        stream = TextStream(length=4 * config.length + 64, stop=config.stop)  # length counts tokens here
        text = "".join(stream.feed(table[i]) for i in ids) + stream.finish()
        return [text], [len(ids)], [logprob / len(ids) if ids else math.nan]

    def session(
        self,
        *,
        length: int = 200,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        repetition_window: int = 64,
        no_repeat_ngram: int | None = None,
        seed: int | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
    ) -> Session:
        """A text written turn by turn, as ``charlstm chat`` writes it: each ``reply`` reads its
        text after everything so far and continues it (the hidden state is kept, and with
        ``cache_size`` the neural cache of every turn's text)."""
        settings = dict(locals())
        del settings["self"]
        from charlstm.generation.chat import ChatSession

        settings["weights"] = settings["weights"] or self.weights
        config = SampleConfig(device=self._device_setting, **settings)
        return Session(ChatSession(self.module, self.tokenizer, config, self.device))

    def adapt(
        self,
        file: PathLike,
        *,
        adapt_method: str = "rms",
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        adapt_bptt: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> Adaptation:
        """Change this model's weights towards the text of ``file`` by dynamic evaluation (as
        ``sample --adapt-to`` does), so that what it writes next is in that text's manner. Load
        the model again for the trained weights. ``on_progress(tokens)`` follows the pass."""
        from charlstm.data.text import TextSource
        from charlstm.evaluation.adaptation import adapt_to_source

        config = AdaptConfig(
            adapt_method=adapt_method, adapt_lr=adapt_lr, adapt_decay=adapt_decay, adapt_bptt=adapt_bptt
        )
        source = TextSource.from_file(file)
        started = time.perf_counter()
        loss, tokens = adapt_to_source(self.module, self.tokenizer, source, config, self.device, on_progress)
        return Adaptation(source.name, loss, tokens, time.perf_counter() - started, config)

    # ------------------------------------------------------------------------------- measuring

    def score(
        self,
        lines: Sequence[str] | str | None = None,
        *,
        file: PathLike | None = None,
        weights: str | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> list:
        """A ``LineScore`` (text, tokens, chars, logprob in nats, bits per character) for each line,
        each scored on its own from the start of a text, as ``charlstm score`` scores them.
        ``lines``: a list of lines, or a text (its lines: a final newline starts no line); or
        ``file``, a text file. ``weights``: as in ``load`` (None: what ``load`` was given).
        ``cache_size``: a neural cache of that many recent tokens, read across the lines in order
        (``cache_theta``, ``cache_lambda`` as ``score --cache-*``; fp32 weights).
        ``on_progress(tokens)`` follows the scoring."""
        from charlstm.data.text import TextSource
        from charlstm.evaluation.score import score_lines

        cache_config = CacheConfig(cache_size=cache_size, cache_theta=cache_theta, cache_lambda=cache_lambda)
        check_cache(cache_config)

        if (lines is None) == (file is None):
            raise ConfigError("give lines or file= (one of them)")
        if file is not None:
            lines = TextSource.from_file(file).read()
        if isinstance(lines, str):
            lines = lines.split("\n")
            if lines and lines[-1] == "":
                lines.pop()  # the newline that ends the last line does not start another
            lines = [line.rstrip("\r") for line in lines]
        module = self._weighted(weights)
        if cache_size and module is not self.module:
            raise ConfigError("--cache-size reads the model's states in fp32: give --weights fp32 with --cache-size")
        return score_lines(
            module, self.tokenizer, list(lines), self.device, on_progress=on_progress,
            cache_config=cache_config if cache_size else None,
        )

    def _weighted(self, weights: str | None):
        """The module to score with: itself in fp32, else one whose recurrent products use the
        lighter weights (``cells.with_weights``), so a figure shows what ``--weights`` costs."""
        from charlstm.cells import with_weights

        weights = weights or self.weights
        SampleConfig(weights=weights)  # an unknown name: the CLI's message
        return with_weights(self.module, weights)

    def evaluate(
        self,
        file: PathLike | None = None,
        *,
        text: str | None = None,
        batch_size: int = 64,
        bptt: int | None = None,
        adapt: bool = False,
        adapt_method: str | None = None,
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        adapt_bptt: int | None = None,
        cache_size: int = 0,
        cache_theta: float | None = None,
        cache_lambda: float | None = None,
        context: PathLike | None = None,
        encoding_errors: str = "strict",
        weights: str | None = None,
        on_progress: Callable[[int], None] | None = None,
    ):
        """Loss, perplexity, bits per character and per byte on ``file`` (files, a directory or a
        pattern, as ``text_source`` reads them, or a source it made; or ``text``): the
        ``EvalReport`` of ``charlstm eval``. ``bptt`` defaults to the length the model trained
        with. ``adapt``: also with dynamic evaluation (``adapt_*`` as ``eval --adapt-*``); the
        weights are put back afterwards. ``cache_size``: also with a neural cache of that many
        recent tokens (``cache_theta``, ``cache_lambda`` as ``eval --cache-*``; with ``adapt``,
        the adapted figures with the cache too). ``weights``: as in ``load``; dynamic evaluation
        and the cache need fp32. ``on_progress(tokens)`` follows the adapting pass."""
        from charlstm.data.text import TextSource
        from charlstm.evaluation.evaluate import evaluate_source

        config = EvalConfig(
            batch_size=batch_size, bptt=bptt, adapt=adapt, device=self._device_setting, encoding_errors=encoding_errors
        )
        given = {
            k: v
            for k, v in (
                ("adapt_method", adapt_method), ("adapt_lr", adapt_lr), ("adapt_decay", adapt_decay),
                ("adapt_bptt", adapt_bptt),
            )
            if v is not None
        }
        adapt_config = AdaptConfig(**given)
        cache_config = CacheConfig(cache_size=cache_size, cache_theta=cache_theta, cache_lambda=cache_lambda)
        if not adapt and given:
            raise ConfigError(ADAPT_NEEDS + " need --adapt")
        check_cache(cache_config)
        module = self._weighted(weights)
        if adapt and module is not self.module:
            raise ConfigError("--adapt learns in fp32: give --weights fp32 with --adapt")
        if cache_size and module is not self.module:
            raise ConfigError("--cache-size reads the model's states in fp32: give --weights fp32 with --cache-size")
        if (file is None) == (text is None):
            raise ConfigError("give a file or text= (one of them)")
        # file: what text_source reads (a file, several, a directory, a pattern) or a source made already
        source = _source(file, None, (), False, encoding_errors) if file is not None else TextSource.from_text(text)
        before = _source(context, None, (), False, encoding_errors) if context is not None else None
        bptt = config.bptt or self.info.bptt or 128
        trained = None
        if adapt:  # dynamic evaluation changes the weights: keep the trained ones to put back
            trained = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        try:
            return evaluate_source(
                module, self.tokenizer, source, batch_size=config.batch_size, bptt=bptt, device=self.device,
                adapt_config=adapt_config if adapt else None, cache_config=cache_config if cache_size else None,
                context=before, on_progress=on_progress,
            )
        finally:
            if trained is not None:
                self.module.load_state_dict(trained)

    def inspect(
        self,
        text: str | None = None,
        *,
        file: PathLike | None = None,
        max_chars: int = 2000,
        show: str | None = None,
        layer: int | None = None,
        unit: int | None = None,
        at: int | None = None,
    ):
        """What ``charlstm inspect`` shows, as an ``Inspection``: activations over ``text`` (or the
        first ``max_chars`` of ``file``), interpretable units, gates and the top predictions at
        token ``at`` (default: the last). ``show``: what to search and colour by; ``layer`` and
        ``unit`` count from 1, as the CLI's flags and the labels shown do; ``unit`` picks one unit
        instead of a search."""
        from charlstm.analysis.inspection import check_request, inspect_text
        from charlstm.data.text import read_head

        if (text is None) == (file is None):
            raise ConfigError("give FILE or --text (one of them)")
        problems = [
            f"--{name} must be at least {low} (got {value})"
            for name, value, low in (("max-chars", max_chars, 1), ("layer", layer, 1), ("unit", unit, 1), ("at", at, 0))
            if value is not None and value < low
        ]
        if problems:
            raise ConfigError("; ".join(problems))
        check_request(self.config, show, layer, unit)  # before reading the text
        if text is None:
            text = read_head(_source(file, None, (), False, "strict"), max_chars)
        return inspect_text(
            self.module, self.tokenizer, text, show, None if layer is None else layer - 1, None if unit is None else unit - 1, at
        )


class Session:
    """A text written turn by turn with one model (``Model.session``): ``reply`` continues what
    it is given after everything so far; ``reset`` forgets it. One sample at a time."""

    def __init__(self, chat):
        self._chat = chat  # a charlstm.generation.chat.ChatSession

    def reply(self, text: str) -> str:
        """Read ``text`` after the text so far and return its continuation."""
        return "".join(self.stream(text))

    def stream(self, text: str) -> Iterator[str]:
        """``reply``, in pieces as they are written; the text is checked now. Stopping early keeps
        what was written up to there."""
        return iter(self._chat.reply(text))

    def reset(self) -> None:
        """Forget the text so far (and count the turns' seeds from the first again)."""
        self._chat.reset()

    def set(self, name: str, value: str) -> None:
        """Change one setting between turns, by its flag's name (``top-k``) and a text value
        (``off`` clears a filter), as ``/top-k 5`` in ``charlstm chat``."""
        self._chat.set(name, value)

    @property
    def settings(self) -> dict:
        """The settings by their flags' names (``top-k``), the seed included."""
        return self._chat.settings()

    def top_next(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` most likely next tokens after the text so far, with their probabilities."""
        return self._chat.top_next(k)


# ------------------------------------------------------------------------------------- training

_TRAIN_SETTINGS = frozenset(TrainConfig.field_names()) | frozenset(ModelShape.field_names())


def text_source(
    files: PathLike | Sequence[PathLike] | None = None,
    *,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    encoding_errors: str = "strict",
):
    """What FILE arguments name, ready to train on: none, the built-in corpus; one file, as it
    is; several files, a directory, a pattern (``'poems/**/*.md'``) or ``val_files``: a
    ``Corpus`` (``separator`` between files, backslash escapes read). With ``skip_bad_files``
    a corpus leaves out files that are not usable text (listed in its ``skipped``)."""
    from charlstm.data.corpus import Corpus, is_pattern, unescape
    from charlstm.data.text import TextSource

    files = (files,) if isinstance(files, (str, os.PathLike)) else tuple(files or ())
    val_files = (val_files,) if isinstance(val_files, (str, os.PathLike)) else tuple(val_files or ())
    if not files:
        if val_files:
            raise ConfigError("--val-files needs FILE arguments to train on")
        return TextSource.builtin()
    single = len(files) == 1 and not val_files and not Path(files[0]).is_dir()
    if single and (Path(files[0]).exists() or not is_pattern(str(files[0]))):
        return TextSource.from_file(files[0], encoding_errors)
    separator = None if separator is None else unescape(separator)
    corpus = Corpus.from_args(files, separator=separator, val_args=val_files, encoding_errors=encoding_errors)
    if skip_bad_files:
        corpus.check(skip_bad=True)
    return corpus


def _source(files, separator, val_files, skip_bad_files, encoding_errors):
    """``files`` as ``text_source`` reads them, or a source it made already, as it is."""
    if files is None or isinstance(files, (str, os.PathLike, list, tuple)):
        return text_source(
            files, separator=separator, val_files=val_files, skip_bad_files=skip_bad_files,
            encoding_errors=encoding_errors,
        )
    return files


def _with_progress(progress, run):
    """``run(events)`` with the events ``progress`` asks for: True, a bar (``charlstm.display``,
    closed however training ends); False, nothing; or an object with the ``TrainingEvents``
    hooks, used as it is (the command line passes its own)."""
    if progress is not True:
        return run(progress or None)
    from charlstm.display import TrainBar

    bar = TrainBar()
    try:
        return run(bar)
    finally:
        bar.close()


def _check_names(settings: dict, allowed, what: str) -> None:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        from charlstm.config import flag

        raise ConfigError(
            f"{', '.join(flag(n) for n in unknown)}: not a setting of {what} "
            "(settings are named as the flags of charlstm train, with _ for -: hidden_size=...)"
        )


def train(
    files=None,
    *,
    out: PathLike | None = None,
    progress=True,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    init_from: PathLike | None = None,
    strict_vocab: bool = False,
    command: list[str] | None = None,
    **settings,
) -> TrainResult:
    """Train a model on ``files`` (a path, a list of paths, directories and patterns, or what
    ``text_source`` returned; None: the built-in corpus), checkpoints in ``out`` (default
    ``checkpoints/<file stem>``), as ``charlstm train`` does. ``settings``: ``TrainConfig`` and
    ``ModelShape`` fields, named as the flags (``hidden_size=256``, ``max_time=120``).
    ``init_from``: fine-tune, starting from that run's weights and tokenizer. ``progress``: True
    draws a bar. ``command``: the command line to record in the run's config.json.

    Returns the ``TrainResult``: ``run_dir``, ``metrics``, ``best_val_loss``, ``stop_reason``, ``steps``, ``best_path``, ``last_path``, ..."""
    from charlstm.training.trainer import train as run_training

    _check_names(settings, _TRAIN_SETTINGS, "train")
    config = TrainConfig.from_dict(settings)
    shape = ModelShape.from_dict(settings)  # bad model settings are reported before any work
    init = None
    if init_from is not None:
        from charlstm.training.finetune import plan_init

        init = plan_init(init_from, settings, strict_vocab=strict_vocab)
        config = TrainConfig.from_dict({**settings, **init.train_settings})
        shape = init.shape
    elif strict_vocab:
        raise ConfigError("--strict-vocab goes with --init-from")
    if settings.get("size") == "auto" and config.max_time is None:
        raise ConfigError("--size auto needs --max-time: it sizes the model for the time budget")
    source = _source(files, separator, val_files, skip_bad_files, config.encoding_errors)
    # What --size auto keeps as given: shape options, and the recipe options a small text's sizing sets.
    recipe = ("epochs", "eval_every", "patience", "ema")  # charlstm.training.sizing.small_text_recipe
    shape_given = [name for name in (*ModelShape.field_names(), *recipe) if name in settings]
    return _with_progress(
        progress,
        lambda events: run_training(
            source, config, shape, out=out, events=events, init=init, command=command, shape_given=shape_given
        ),
    )


def resume(
    run: PathLike,
    files=None,
    *,
    progress=True,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    command: list[str] | None = None,
    **changes,
) -> TrainResult:
    """Continue the run in ``run`` exactly where its last checkpoint left it (``charlstm train
    --resume``); ``files`` default to the text it trained on. ``changes``: settings to change
    (``max_steps=``, ``lr=``, ...; those that fix the model, its tokens or the order of the data
    cannot change). Returns the ``TrainResult``, as ``train``."""
    from charlstm.training.trainer import resume as resume_training

    _check_names(changes, _TRAIN_SETTINGS, "train")
    source = None
    if files is not None and not (isinstance(files, (list, tuple)) and not files):
        source = _source(files, separator, val_files, skip_bad_files, changes.get("encoding_errors", "strict"))
    return _with_progress(progress, lambda events: resume_training(run, source, changes=changes, events=events, command=command))


def read_run(path: PathLike) -> RunSummary:
    """What ``charlstm info`` shows of the run in ``path``: status, command, model, tokenizer,
    data, steps, time, best validation loss, last sample and the metrics. Reads only whole files:
    works on a run that is training, finished or killed."""
    from charlstm.runs.info import read_run as read

    return read(path)


def held_out_text(run: PathLike) -> str:
    """The text the run at ``run`` held out and validated on (the last ``val_fraction`` of its
    tokens, decoded): what ``charlstm eval`` should score to compare with the run's own figures."""
    from charlstm.runs.directory import validation_text

    return validation_text(Path(run))
