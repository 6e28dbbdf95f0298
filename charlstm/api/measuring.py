"""What ``Model`` measures and changes: ``score``, ``evaluate``, ``inspect``, ``adapt``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charlstm.config import AdaptConfig, CacheConfig, EvalConfig, SampleConfig, check_cache, reading_configs
from charlstm.errors import ConfigError

from charlstm.api.sources import PathLike, _source


@dataclass(frozen=True)
class Adaptation:
    """How ``Model.adapt`` went: the text, the settings, and the loss while adapting."""

    text: str  # the text's name (its path)
    loss: float  # mean nats per token while adapting
    tokens: int
    seconds: float
    settings: AdaptConfig
    tuned_lr: float | None = None  # lr and decay at the end of the text (--adapt-tune learns them)
    tuned_decay: float | None = None


class Measuring:
    """The measuring half of ``Model`` (which sets ``module``, ``tokenizer``, ``device``,
    ``weights``, ``info`` and ``config``)."""

    def adapt(
        self,
        file: PathLike,
        *,
        adapt_method: str = "rms",
        adapt_lr: float | None = None,
        adapt_decay: float | None = None,
        adapt_bptt: int = 64,
        adapt_depth: int = 4,
        adapt_tune: float | None = None,
        adapt_prior: int | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> Adaptation:
        """Change this model's weights towards the text of ``file`` by dynamic evaluation (as
        ``sample --adapt-to`` does), so that what it writes next is in that text's manner. Load
        the model again for the trained weights. ``on_progress(tokens)`` follows the pass."""
        from charlstm.data.text import TextSource
        from charlstm.evaluation.adaptation import adapt_to_source

        config = AdaptConfig(
            adapt_method=adapt_method, adapt_lr=adapt_lr, adapt_decay=adapt_decay, adapt_bptt=adapt_bptt,
            adapt_depth=adapt_depth, adapt_tune=adapt_tune, adapt_prior=adapt_prior,
        )
        source = TextSource.from_file(file)
        started = time.perf_counter()
        loss, tokens, tuned = adapt_to_source(self.module, self.tokenizer, source, config, self.device, on_progress)
        return Adaptation(source.name, loss, tokens, time.perf_counter() - started, config, *tuned)

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
        lighter weights (``stepper.with_weights``), so a figure shows what ``--weights`` costs."""
        from charlstm.stepper import with_weights

        weights = self._weights(weights)
        SampleConfig(weights=weights)  # an unknown name: the CLI's message
        return with_weights(self.module, weights)

    def _weights(self, given: str | None) -> str:
        """How a call holds the recurrent weights: as it says, else as ``load`` said, else fp32
        (``compress`` has a default of its own)."""
        return given or self.weights or "fp32"

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
        adapt_depth: int | None = None,
        adapt_tune: float | None = None,
        adapt_prior: int | None = None,
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
        adapt_config, cache_config = reading_configs(
            adapt, cache_size, cache_theta, cache_lambda, adapt_method=adapt_method, adapt_lr=adapt_lr,
            adapt_decay=adapt_decay, adapt_bptt=adapt_bptt, adapt_depth=adapt_depth, adapt_tune=adapt_tune,
            adapt_prior=adapt_prior,
        )
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
                adapt_config=adapt_config, cache_config=cache_config if cache_size else None,
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
