"""The ``--max-time`` budget, and why a run stopped.

With ``--max-time`` the budget is the plan: unless ``--epochs`` or ``--max-steps`` is given, the
run trains until the budget is spent, the learning-rate schedule ends where training does (the
budget less the final validation), and the default ``--eval-every`` validates every
``max_time / VALIDATIONS_IN_BUDGET`` seconds. ``--max-time`` counts everything from the first
step to the last checkpoint written: training stops early enough that the final validation,
checkpoint (and sample) end within the budget, from what they cost at the validations before.

``Budget`` keeps that bookkeeping (and, with or without a budget, the seconds spent outside
training steps); ``StopReason`` names why a run stopped and ``stop_detail`` says it in words.
"""

from __future__ import annotations

import signal
import statistics
from collections import deque
from enum import Enum

from charlstm.config import EVAL_EVERY_TOKENS, TrainConfig

# An estimate that falls short by up to BUDGET_TOLERANCE of the budget passes unremarked; more,
# and the result says what ran over and why.
BUDGET_TOLERANCE = 0.02
VALIDATIONS_IN_BUDGET = 10  # the default --eval-every under --max-time: a validation every budget / 10 seconds
STEP_MARGIN = 1.5  # what the next step may take, as a multiple of the recent median


class StopReason(str, Enum):
    """Why training stopped. The values are what checkpoints, ``config.json`` and metrics record
    (and what runs written before this enum record): keep them."""

    EPOCHS = "epochs"
    MAX_STEPS = "max_steps"
    MAX_TIME = "max_time"
    PATIENCE = "patience"
    SIGINT = "SIGINT"
    SIGTERM = "SIGTERM"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def by_signal(self) -> bool:
        return self in (StopReason.SIGINT, StopReason.SIGTERM)


# In order of precedence, for ranks to agree on one (None: training goes on).
PRECEDENCE: tuple[StopReason | None, ...] = (None, *StopReason)


def default_eval_every(config: TrainConfig) -> int:
    """The default ``--eval-every``: every ``EVAL_EVERY_TOKENS`` training tokens."""
    return max(1, round(EVAL_EVERY_TOKENS / (config.batch_size * config.bptt)))


class Budget:
    """The clock of one training process: what a step and a validation round take, and, under
    ``--max-time``, when to stop, when a validation is due and where the schedule ends.

    ``elapsed`` arguments are seconds of training counting those before a resume (the run's
    clock); all ranks agree on every decision through ``agree`` (their clocks differ)."""

    def __init__(self, config: TrainConfig, *, val_tokens: int, parameters: int, started_at: float,
                 first_step: int, agree=lambda flag: flag) -> None:
        self.max_time = config.max_time
        self.step_tokens = config.batch_size * config.bptt
        self.val_tokens = val_tokens
        self.parameters = parameters
        self.agree = agree
        self.first_step = first_step  # the step this process started from (a resume's)
        self.session_start = started_at  # the run's elapsed when this process began training
        self.overhead = 0.0  # this process's seconds in validations, checkpoints and samples
        self.round_costs: list[float] = []  # seconds of each validation + checkpoint (+ sample)
        self.sample_cost = 0.0  # seconds of the last training sample
        self.recent_steps: deque[float] = deque(maxlen=31)  # seconds of the last training steps
        self.step_median = 0.0
        self.step_seconds = 0.0  # what the next step may take
        self.last_validation = started_at  # elapsed at the last validation (or the start)
        self.reserved: float | None = None  # seconds set aside for the final round when training stopped
        self.final_round: float | None = None  # what the final round took
        # Under --max-time with the default --eval-every, validations are spaced by the clock.
        self.timed_validations = self.max_time is not None and config.eval_every == default_eval_every(config)

    def step_took(self, seconds: float, step: int) -> None:
        """A training step (now ``step``) took ``seconds``: what a step takes is the median of the
        last 31 (a busy machine's odd slow step, and the first step of a process, slow with
        one-time work, are left out), with a margin."""
        if step - self.first_step > 1:
            self.recent_steps.append(seconds)
            self.step_median = statistics.median(self.recent_steps)
        self.step_seconds = STEP_MARGIN * self.step_median

    def train_seconds(self, elapsed: float) -> float:
        """Seconds this process has spent in training steps (not validating, saving or sampling)."""
        return max(1e-9, elapsed - self.session_start - self.overhead)

    def round_estimate(self, sampling: bool) -> float:
        """Seconds a validation, its checkpoint and its sample will take: the most of the last
        three measured, with a margin; before any, from the speed of the recent training steps
        (scoring a token is a forward pass, a third of what training on it costs) and the size of
        a checkpoint, at most half the budget: a guess never ends a run that has not measured
        one (the first validation, a tenth of the way in, measures it)."""
        sample = self.sample_cost if sampling else 0.0
        if self.round_costs:
            return 1.1 * max(self.round_costs[-3:]) + sample
        scoring = self.val_tokens * self.step_median / self.step_tokens / 3
        saving = 0.05 + 3 * 4 * self.parameters / 100e6  # weights and two moments at 100 MB/s
        guess = scoring + saving + sample
        return guess if self.max_time is None else min(guess, self.max_time / 2)

    def schedule_end(self, sampling: bool) -> float | None:
        """Where training will end on the run's clock (the budget less one step and the final
        round): where the learning-rate schedule ends. None: no budget."""
        if self.max_time is None:
            return None
        return max(1e-9, self.max_time - self.step_seconds - self.round_estimate(sampling))

    def out_of_time(self, elapsed: float, sampling: bool) -> bool:
        """Whether another step would leave too little of the budget for the final round."""
        if self.max_time is None:
            return False
        reserve = self.round_estimate(sampling)
        if elapsed + self.step_seconds + reserve < self.max_time:
            return False
        self.reserved = reserve
        return True

    def validation_due(self, elapsed: float) -> bool:
        """Under --max-time with the default --eval-every: a validation every budget /
        ``VALIDATIONS_IN_BUDGET`` seconds, so a run of any length has a curve and samples."""
        if not self.timed_validations:
            return False
        return self.agree(elapsed - self.last_validation >= self.max_time / VALIDATIONS_IN_BUDGET)

    def room_for_a_round(self, elapsed: float, sampling: bool) -> bool:
        """Whether a validation now would still leave room for a step and the final round; when
        not, the periodic validation is skipped and training goes on until ``out_of_time``, so
        the last seconds of the budget train rather than wait."""
        if self.max_time is None:
            return True
        estimate = self.round_estimate(sampling)
        return not self.agree(elapsed + estimate + self.step_seconds + estimate >= self.max_time)

    def round_took(self, validation: float, sample: float | None, elapsed: float, final: bool) -> None:
        """A round took ``validation`` seconds (validating and saving) and ``sample`` (None: no sample)."""
        self.round_costs.append(validation)
        if sample is not None:
            self.sample_cost = sample
        total = validation + (sample or 0.0)
        self.overhead += total
        self.last_validation = elapsed
        if final:
            self.final_round = total

    def sample_took(self, seconds: float) -> None:
        self.sample_cost = seconds
        self.overhead += seconds

    def overrun(self, elapsed: float, reason: StopReason) -> str | None:
        """What ran over the budget (by more than BUDGET_TOLERANCE) and why; None: nothing."""
        budget = self.max_time
        if budget is None or reason != StopReason.MAX_TIME or elapsed <= budget * (1 + BUDGET_TOLERANCE):
            return None
        over = f"{elapsed - budget:.1f} s over the {budget:g} s budget"
        if self.final_round is not None and self.reserved is not None and self.final_round > self.reserved:
            return (
                f"{over}: the final validation and checkpoint took {self.final_round:.1f} s where "
                f"{self.reserved:.1f} s had been set aside (measured at the validations before it)"
            )
        if self.reserved is not None and self.reserved > budget:
            return f"{over}: one validation and checkpoint takes about {self.reserved:.1f} s, more than the budget"
        return f"{over}: a training step took longer than the {self.step_seconds:.1f} s the steps before it took"


def stop_detail(reason: StopReason, config: TrainConfig, *, elapsed: float, epochs: float, steps: int,
                metrics: list[dict]) -> str:
    """Why the run stopped, in words, and how much of its budget it used (the summary,
    ``config.json``'s ``stop`` and ``charlstm info``)."""
    used = ""
    if config.max_time is not None:
        used = f"{elapsed:.1f} s of the {config.max_time:g} s budget used ({100 * elapsed / config.max_time:.0f}%)"
    if reason == StopReason.MAX_TIME:
        return f"the budget: {used}"
    if reason == StopReason.PATIENCE:
        best = min(metrics, key=lambda m: m["val_loss"])
        why = (
            f"early stopping: the validation loss had not improved for {config.patience} validation"
            f"{'s' if config.patience != 1 else ''} (best {best['val_loss']:.4f} at step {best['step']:,}, "
            f"last {metrics[-1]['val_loss']:.4f}): the model had begun to over-fit"
        )
        return f"{why}; {used}" if used else why
    if reason == StopReason.EPOCHS:
        why = f"--epochs {config.epoch_limit}: {epochs:.2f} passes over the text"
    elif reason == StopReason.MAX_STEPS:
        why = f"--max-steps {config.max_steps}: {steps:,} steps"
    else:
        why = f"{reason.value}: asked to stop"
    return f"{why}; {used}" if used else why


def out_of_patience(metrics: list[dict], patience: int | None) -> bool:
    """Whether the validation loss has not improved for ``patience`` evaluations (``--patience``)."""
    losses = [m["val_loss"] for m in metrics]
    if patience is None or not losses:
        return False
    since_best = len(losses) - 1 - min(range(len(losses)), key=losses.__getitem__)
    return since_best >= patience


class StopRequest:
    """Turns SIGINT/SIGTERM into a request to stop after the current step; a second signal
    stops at once."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def agreement(dist, device):
    """A function of a flag: true on every rank if it is true on any (their clocks differ)."""
    if not dist.enabled:
        return lambda flag: flag
    return lambda flag: bool(dist.max(int(flag), device))
