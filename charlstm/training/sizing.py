"""Sizing by budget (``--size auto``, the default when ``--max-time`` is given).

With a time budget, the best model is not one fixed shape: a big model learns more per token but
sees fewer tokens in the time. ``choose_size`` picks the recurrent layers' shape and the dropout
from the budget, this machine's measured speed and the corpus size:

1. Time a few training steps (the median of three) of each shape on ``LADDER`` (smallest first, random tokens, the
   run's device, precision and batch), so the speed is this machine's, not a guess.
2. Take the largest shape that still sees ``TOKENS_PER_PARAMETER`` tokens per parameter in the
   budget at that speed, and has at most ``PARAMETERS_PER_TOKEN`` parameters per token of
   training text (a smaller corpus gets a smaller model) unless the text is small (under
   ``SMALL_TEXT_TOKENS``): there early stopping (4.) guards against over-fitting, and a bigger
   model stopped early did better (benchmarks/RESULTS.md, "Small texts").
3. Set the dropout from how many passes over the text the budget gives (``dropout_for``): more
   passes over the same text need more regularisation.
4. A small text (under ``SMALL_TEXT_TOKENS`` training tokens) that the budget passes over more
   than ``DEFAULT_EPOCHS`` times (or ``--epochs`` given) also gets its recipe
   (``small_text_recipe``): a validation every pass and early stopping, so ``best.pt`` is the
   model before it over-fits. (The budget, not ``--epochs``, ends every ``--max-time`` run
   unless ``--epochs`` is given: ``charlstm.training.budget``.)

The constants were measured on tinyshakespeare with 60 s, 300 s and 1800 s budgets (benchmarks/RESULTS.md,
"A longer run"). Any shape option the user gives turns sizing off, and the choice and the
reason are shown at the start and recorded in the run's ``config.json``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charlstm.config import DEFAULT_EPOCHS, ModelConfig, ModelShape, TrainConfig
from charlstm.hardware import Precision
from charlstm.model import LanguageModel, count_parameters

LADDER = ((1, 128), (1, 256), (1, 384), (1, 512), (1, 768), (1, 1024), (2, 1024))  # (layers, units)
TOKENS_PER_PARAMETER = 4.0
# The LN-LSTM learns more from a token: at 300 s on tinyshakespeare 1 x 768 (1.4 tokens per
# parameter) scored 1.3953 against 1 x 512's 1.4186 (5.1), and 1 x 1024 (0.8) 1.4044 in the
# benchmark (benchmarks/RESULTS.md, "The LN-LSTM as charlstm's cell").
TOKENS_PER_PARAMETER_BY_CELL = {"ln-lstm": 1.0}
PARAMETERS_PER_TOKEN = 3.0
SMALL_TEXT_TOKENS = 200_000  # training tokens below which --size auto also sets the recipe
SMALL_TEXT_PATIENCE = 3  # a small text's run stops after this many validations without improvement
SMALL_TEXT_EMA = 0.99  # and averages its weights (--ema): it stops early, at a high learning rate
# The shape fields that fix the size; giving any of them keeps the shape as given. A --cell given
# is sized: the ladder's shapes are timed as that cell.
SHAPE_FIELDS = ("embedding_dim", "hidden_size", "num_layers", "tie_weights")


@dataclass
class SizeChoice:
    shape: ModelShape
    tokens_per_s: float  # measured for the chosen shape
    planned_tokens: float  # tokens the budget buys at that speed
    epochs: float  # passes over the training text that makes
    measured: dict[str, float]  # "1x256" -> tokens/s, every shape timed
    reason: str

    def to_dict(self) -> dict:
        return {
            "shape": f"{self.shape.num_layers}x{self.shape.hidden_size}",
            "cell": self.shape.cell,
            "dropout": self.shape.dropout,
            "tokens_per_s": round(self.tokens_per_s),
            "planned_tokens": round(self.planned_tokens),
            "epochs": round(self.epochs, 2),
            "measured": {k: round(v) for k, v in self.measured.items()},
            "reason": self.reason,
        }


def dropout_for(epochs: float, cell: str = "lstm") -> float:
    """Dropout for a run that makes ``epochs`` passes over its text: 0.1 for a fraction of a
    pass, rising by 0.012 a pass, at most 0.4. (300 s on tinyshakespeare is ~8 passes by the
    timed speed; there 0.2 did as well as 0.25 and better than 0.3.) The LN-LSTM's rises faster,
    0.15 + 0.03 a pass, at most 0.4, after 300 s runs on two texts: tinyshakespeare at 1 x 768 and
    3.3 passes, 0.24 scored 1.4063 nats/char and 0.34 1.4224; at 1 x 512 and ~6 passes 0.25
    1.4270, 0.18 1.4293 and 0.1 1.4394; 900 KB of Python at 1 x 512 and ~8 passes, 0.3 1.8492
    bits per byte, 0.4 1.8249 and 0.5 1.8213 (benchmarks/RESULTS.md)."""
    start, per_pass = (0.15, 0.03) if cell == "ln-lstm" else (0.1, 0.012)
    return round(min(0.4, start + per_pass * max(0.0, epochs)), 2)


def small_text_recipe(epochs: float, train_tokens: int, steps_per_epoch: int, config: TrainConfig,
                      given=()) -> dict:
    """``TrainConfig`` changes for a text of ``train_tokens`` that the budget passes over
    ``epochs`` times: none for a text of ``SMALL_TEXT_TOKENS`` or more, or one the budget passes
    over at most ``--epochs`` (default ``DEFAULT_EPOCHS``) times. Otherwise the many passes would
    over-fit a small text: ``--eval-every`` becomes one pass and ``--patience``
    ``SMALL_TEXT_PATIENCE``, so the run stops once the held-out tail stops improving and
    ``best.pt`` keeps the best; and ``--ema`` ``SMALL_TEXT_EMA``: stopped early, the learning rate
    is still high, and the average of the last steps' weights scored better. Options in ``given``
    (what the user chose) are kept."""
    if train_tokens >= SMALL_TEXT_TOKENS or epochs <= (config.epochs or DEFAULT_EPOCHS):
        return {}
    changes = {"eval_every": steps_per_epoch, "patience": SMALL_TEXT_PATIENCE, "ema": SMALL_TEXT_EMA}
    return {name: value for name, value in changes.items() if name not in given}


def many_passes_recipe(epochs: float, train_tokens: int, config: TrainConfig, given=()) -> dict:
    """``TrainConfig`` changes for a text of ``SMALL_TEXT_TOKENS`` or more that the budget passes
    over more than ``--epochs`` (default ``DEFAULT_EPOCHS``) times: ``--patience``
    ``SMALL_TEXT_PATIENCE``, so a run the budget would carry past the point where it over-fits
    stops there (``best.pt`` keeps the best) and says so. (More passes over a 1 MB text once did
    worse than 10: benchmarks/RESULTS.md, "Not prose".) A given ``--patience`` is kept."""
    if train_tokens < SMALL_TEXT_TOKENS or epochs <= (config.epochs or DEFAULT_EPOCHS) or "patience" in given:
        return {}
    return {"patience": SMALL_TEXT_PATIENCE}


def pick(budget: float, speeds: dict[tuple[int, int], float], train_tokens: int, embedding_dim: int,
         vocab_size: int, cell: str = "lstm") -> tuple[int, int]:
    """The largest shape of ``speeds`` (in ``LADDER`` order) that sees at least
    ``TOKENS_PER_PARAMETER`` tokens per parameter in ``budget`` seconds and has at most
    ``PARAMETERS_PER_TOKEN`` parameters per training token (a text of ``SMALL_TEXT_TOKENS`` or
    more); the smallest when none does."""
    chosen = next(iter(speeds))
    for (layers, units), speed in speeds.items():
        if _fits(_parameters(layers, units, embedding_dim, vocab_size), speed, budget, train_tokens, cell):
            chosen = (layers, units)
    return chosen


def _fits(parameters: int, speed: float, budget: float, train_tokens: int, cell: str = "lstm") -> bool:
    """Whether a model of ``parameters`` at ``speed`` tokens/s suits the budget and the text (a
    text under ``SMALL_TEXT_TOKENS`` has no cap on parameters per token: it stops early)."""
    capped = train_tokens >= SMALL_TEXT_TOKENS
    needed = TOKENS_PER_PARAMETER_BY_CELL.get(cell, TOKENS_PER_PARAMETER)
    return speed * budget >= needed * parameters and (
        not capped or parameters <= PARAMETERS_PER_TOKEN * train_tokens
    )


def _parameters(num_layers: int, hidden_size: int, embedding_dim: int, vocab_size: int) -> int:
    """Parameters of the (untied) LSTM model of this shape (an LN-LSTM's LNs add 0.3%)."""
    config = ModelConfig(vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers)
    return count_parameters(config)


def measure_speed(config: ModelConfig, batch_size: int, bptt: int, device, precision: Precision,
                  steps: int = 3) -> float:
    """Training tokens per second of a model of ``config``: two untimed steps (the kernels'
    first calls), then ``steps`` timed one by one (forward, backward, clipping, AdamW) on random
    tokens; the median step gives the speed, so one slow step on a busy machine does not decide.
    The global random state is left as it was: a seeded run draws the same weights with or
    without sizing."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = LanguageModel(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(0, config.vocab_size, (bptt + 1, batch_size), device=device)
        hidden = None
        times = []
        for step in range(steps + 2):
            _sync(device)
            started = time.perf_counter()
            with precision.autocast(device):
                logits, hidden = model(ids[:-1], hidden)
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[1:].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            hidden = tuple(h.detach() for h in hidden)
            _sync(device)
            if step >= 2:
                times.append(time.perf_counter() - started)
        return batch_size * bptt / statistics.median(times)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def choose_size(shape: ModelShape, config: TrainConfig, vocab_size: int, train_tokens: int, device,
                precision: Precision, keep_dropout: bool = False) -> SizeChoice:
    """The shape (and, unless ``keep_dropout``, the dropout) for ``config.max_time`` seconds of
    training on ``train_tokens`` tokens: shapes are timed smallest first until one is too big
    for the budget (the ones after it are bigger still)."""
    budget = float(config.max_time)
    speeds: dict[tuple[int, int], float] = {}
    for layers, units in LADDER:
        trial = ModelConfig.of(
            ModelShape(**{**shape.to_dict(), "num_layers": layers, "hidden_size": units}), vocab_size
        )
        speeds[(layers, units)] = measure_speed(trial, config.batch_size, config.bptt, device, precision)
        n = _parameters(layers, units, shape.embedding_dim, vocab_size)
        if not _fits(n, speeds[(layers, units)], budget, train_tokens, shape.cell):
            break  # too big for the budget or the text: so is everything after it
    layers, units = pick(budget, speeds, train_tokens, shape.embedding_dim, vocab_size, shape.cell)
    speed = speeds[(layers, units)]
    planned = speed * budget
    epochs = planned / max(1, train_tokens)
    dropout = shape.dropout if keep_dropout else dropout_for(epochs, shape.cell)
    n = _parameters(layers, units, shape.embedding_dim, vocab_size)
    reason = (
        f"{planned / 1e6:.1f}M tokens in {budget:g} s at the measured {speed:,.0f} tokens/s = "
        f"{planned / n:.1f} per parameter ({n:,}), {epochs:.1f} passes over the text"
        + ("" if keep_dropout else f" -> dropout {dropout:g}")
    )
    return SizeChoice(
        shape=ModelShape(**{**shape.to_dict(), "num_layers": layers, "hidden_size": units, "dropout": dropout}),
        tokens_per_s=speed,
        planned_tokens=planned,
        epochs=epochs,
        measured={f"{k[0]}x{k[1]}": v for k, v in speeds.items()},
        reason=reason,
    )
