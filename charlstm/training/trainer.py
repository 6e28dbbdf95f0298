"""The training loop: truncated backpropagation through time with the hidden state carried from
one window to the next, gradient-norm clipping, AdamW, periodic validation and checkpoints.

``train`` and ``resume`` prepare a run (``charlstm.training.setup``) and hand it to a ``Trainer``, which
keeps the loop, the step, evaluation and saving. No Click and no terminal output here: progress
goes to a ``TrainingEvents`` object.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import statistics
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from charlstm import __version__
from charlstm.data.batches import Window, get_window
from charlstm.cells import Hidden
from charlstm.runs.checkpoint import BEST, LAST, make_payload, save_checkpoint
from charlstm.config import EVAL_EVERY_TOKENS, ModelShape, TrainConfig
from charlstm.distributed import from_environment, is_main_process, shutdown
from charlstm.errors import CharlstmError, NumericalError
from charlstm.evaluation.evaluate import stream_loss
from charlstm.training.finetune import InitFrom
from charlstm.runs.lock import RunLock
from charlstm.model import detach_hidden
from charlstm.training.setup import TrainInfo, TrainingSetup, planned_steps, prepare_new, prepare_resume
from charlstm.runs.directory import RunRecord, append_metrics, plan_resume, recorded_commands
from charlstm.training.tensorboard_log import check_available as check_tensorboard
from charlstm.data.source import Source
from charlstm.training.watching import Watcher

MAX_BAD_STEPS = 3  # non-finite steps in a row before training gives up
# --max-time counts everything from the first step to the last checkpoint written: training stops
# early enough that the final validation, checkpoint (and sample) end within the budget, from
# their cost measured at the previous validations. An estimate that falls short by up to
# BUDGET_TOLERANCE of the budget passes unremarked; more, and the result says what ran over and why.
BUDGET_TOLERANCE = 0.02
VALIDATIONS_IN_BUDGET = 6  # the default --eval-every validates at least every --max-time / 6 seconds
_STOP_REASONS = ("epochs", "max_steps", "max_time", "patience", "SIGINT", "SIGTERM")  # in order of precedence


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    epochs_done: float
    elapsed: float
    tokens_per_s: float
    best_val_loss: float
    last_val_loss: float
    best_path: Path
    last_path: Path
    stop_reason: str  # "epochs", "max_steps", "max_time", "patience" or the signal's name
    num_parameters: int
    metrics: list[dict] = field(default_factory=list)
    # This process's seconds (a resumed run's ``elapsed`` also counts those before the resume):
    train_seconds: float = 0.0  # in training steps (``tokens_per_s`` is tokens over these)
    overhead_seconds: float = 0.0  # in validations, checkpoints and samples
    max_time: float | None = None  # the budget (--max-time)
    overrun: str | None = None  # what ran over the budget (beyond BUDGET_TOLERANCE) and why


class TrainingEvents:
    """Hooks the caller overrides to show progress; the defaults do nothing."""

    def on_start(self, info: TrainInfo) -> None: ...

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        """``train_loss`` is a 0-dim tensor: reading it (``float``) waits for the GPU, so read it
        only when it is shown."""

    def on_validation_start(self, step: int, tokens: int) -> None:
        """A validation begins after ``step``: ``tokens`` held-out tokens to score, reported by
        ``on_validation_progress`` as they are; ``on_eval`` follows, with its record, once the
        checkpoint is written."""

    def on_validation_progress(self, tokens: int) -> None:
        """``tokens`` more validation tokens scored."""

    def on_eval(self, record: dict) -> None: ...

    wants_samples = False  # True: a sample at each evaluation unless --sample-every says otherwise

    def on_sample(self, step: int, val_loss: float, text: str) -> None:
        """A short sample from the model (``--sample-every``), prime included."""

    def on_end(self, result: TrainResult) -> None: ...


def train(
    source: Source,
    config: TrainConfig,
    shape: ModelShape | None = None,
    *,
    out: str | os.PathLike | None = None,
    events: TrainingEvents | None = None,
    init: InitFrom | None = None,
    command: list[str] | None = None,
    shape_given: Collection[str] | None = None,
) -> TrainResult:
    """Train a new model on ``source`` and write checkpoints to the run directory; with ``init``
    (``charlstm.training.finetune.plan_init``), starting from that model. ``command``: the command
    line to record. ``shape_given``: the shape fields the user chose, the rest sized by ``--size
    auto`` when there is a ``--max-time`` (None: ``shape`` as it is; see
    ``charlstm.training.setup.prepare_new``).

    The run directory is locked (``charlstm.runs.lock``, rank 0 only) from its creation to the end of
    training, whether it ends normally, by an error or by a signal."""
    if config.tensorboard:
        check_tensorboard()
    dist = from_environment(config.device)
    try:
        with RunLock() as lock:
            setup = prepare_new(
                source, config, shape or ModelShape(), out=out, dist=dist, init=init,
                lock=lock if dist.is_main else None, shape_given=shape_given,
            )
            return Trainer(setup, events, command=command).run()
    finally:
        shutdown(dist)


def resume(
    run: str | os.PathLike,
    source: Source | None = None,
    *,
    changes: dict | None = None,
    events: TrainingEvents | None = None,
    command: list[str] | None = None,
) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (see
    ``charlstm.runs.directory.plan_resume``); the run is locked before anything in it is written,
    and until training ends."""
    with RunLock() as lock:
        plan = plan_resume(run, source, changes=changes, lock=lock if is_main_process() else None)
        if plan.config.tensorboard:
            check_tensorboard()
        dist = from_environment(plan.config.device)
        try:
            return Trainer(prepare_resume(plan, dist), events, command=command).run()
        finally:
            shutdown(dist)


def learning_rate(config: TrainConfig, step: int, planned_steps: int, elapsed: float) -> float:
    """Linear warm-up, then cosine decay to ``--final-lr-ratio`` of ``--lr`` by the end of the run.

    The run ends at ``planned_steps`` or ``--max-time``, whichever comes first, so progress is
    the larger of the two fractions.
    """
    if config.lr_schedule == "constant":
        return config.lr
    warmup = min(config.warmup_steps, planned_steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, planned_steps - warmup)
    if config.max_time:
        progress = max(progress, elapsed / config.max_time)
    progress = min(progress, 1.0)
    min_lr = config.lr * config.final_lr_ratio
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))


def out_of_patience(metrics: list[dict], patience: int | None) -> bool:
    """Whether the validation loss has not improved for ``patience`` evaluations (``--patience``)."""
    losses = [m["val_loss"] for m in metrics]
    if patience is None or not losses:
        return False
    since_best = len(losses) - 1 - min(range(len(losses)), key=losses.__getitem__)
    return since_best >= patience


class _StopRequest:
    """Turns SIGINT/SIGTERM into a request to stop after the current step; a second signal
    stops at once."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
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


def _emit(events, name: str, *args) -> None:
    """Call an event hook that an events object written before it existed may lack."""
    hook = getattr(events, name, None)
    if hook is not None:
        hook(*args)


class Trainer:
    """One training run, handed everything it starts from (``TrainingSetup``): ``run`` trains,
    ``train_step`` is one optimizer step, ``evaluate_and_save`` validates and writes checkpoints.

    ``state`` (a ``TrainState``) is what a checkpoint records about training; the trainer keeps it
    up to date as it goes.
    """

    def __init__(
        self, setup: TrainingSetup, events: TrainingEvents | None = None, *, command: list[str] | None = None
    ):
        self.setup = setup
        self.command = command
        self.config, self.model, self.optimizer = setup.config, setup.model, setup.optimizer
        self.data, self.state, self.dist, self.device = setup.data, setup.state, setup.dist, setup.device
        self.average = setup.average  # --ema: validated and saved as best.pt instead of the raw weights
        self.run_dir = setup.run_dir
        self.events = (events or TrainingEvents()) if self.dist.is_main else TrainingEvents()
        self.planned_steps = planned_steps(self.config, len(self.data.windows))
        # fp16 needs its loss scaled so small gradients do not underflow; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=setup.precision.scales_loss)
        # DDP averages the gradients of all ranks in backward(); rank 0's weights are copied to
        # the others when it is built, so every rank starts from (and stays at) the same weights.
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.lr = self.config.lr
        self.grad_norm = torch.zeros(())  # a tensor: read at evaluations only
        self.loss_sum = torch.zeros((), device=self.device)  # train loss since the last evaluation
        self.loss_count = 0
        self.bad_steps: list[int] = []  # the current run of non-finite steps
        self.last_val = self.state.metrics[-1]["val_loss"] if self.state.metrics else math.nan
        self._start = time.perf_counter() - self.state.elapsed
        # Where this process started, and its seconds spent other than in training steps.
        self._session_elapsed, self._session_tokens = self.state.elapsed, self.state.tokens
        self._overhead = 0.0
        self._round_costs: list[float] = []  # seconds of each validation + checkpoint (+ sample)
        self._sample_cost = 0.0  # seconds of the last training sample
        self._recent_steps: deque[float] = deque(maxlen=31)  # seconds of the last training steps
        self._step_median = 0.0
        self._step_seconds = 0.0  # what the next step may take
        self._last_validation = self.state.elapsed  # elapsed at the last validation (or the start)
        self._reserved: float | None = None  # seconds set aside for the final round when training stopped
        self._final_round: float | None = None  # what the final round took
        self._saved: tuple[int, str | None] | None = None  # (step, stop reason) of the last save
        self._checkpoint_step: int | None = setup.info.resumed_from_step  # what last.pt holds
        self._time_validations = self.config.max_time is not None and self.config.eval_every == max(
            1, round(EVAL_EVERY_TOKENS / (self.config.batch_size * self.config.bptt))
        )  # the default --eval-every: under --max-time, also validate every max_time / 6 seconds
        self.stop_reason: str | None = None  # known before the last checkpoint is written
        self.watcher: Watcher | None = None  # samples and TensorBoard (rank 0)
        self.record: RunRecord | None = None  # config.json (rank 0)

    def elapsed(self) -> float:
        """Seconds of training, counting those before a resume."""
        return time.perf_counter() - self._start

    def run(self) -> TrainResult:
        if self.dist.is_main:
            setup = self.setup
            command, resumes = self.command, []
            if setup.info.resumed_from_step is not None:  # the first command stays; this one is a resume
                first, resumes = recorded_commands(self.run_dir)
                command = first
                resumes = [*resumes, {"command": self.command, "step": setup.info.resumed_from_step}]
            self.record = RunRecord(
                self.run_dir,
                {
                    "model": setup.model_config.to_dict(),
                    "train": self.config.to_dict(),
                    "corpus": setup.corpus,
                    "init_from": setup.init_from,
                    "info": setup.info.to_dict(),
                    "versions": {"charlstm": __version__, "torch": torch.__version__},
                    "command": command,
                    "resumes": resumes,
                },
            )
            self.watcher = Watcher(setup, self.events)
        try:
            return self._run()
        except CharlstmError as e:
            if self.record is not None:
                self.record.end(f"failed: {e}")
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the steps since last.pt lost
            message = self._interrupted()
            if self.record is not None:
                self.record.end(f"interrupted: {message}")
            raise KeyboardInterrupt(message) from None
        finally:
            if self.watcher is not None:
                self.watcher.close()

    def _run(self) -> TrainResult:
        config, state = self.config, self.state
        self.events.on_start(self.setup.info)
        self._start = time.perf_counter() - state.elapsed
        self.model.train()
        reason = "epochs"
        hidden = state.hidden_by_rank[self.dist.rank]
        with _StopRequest() as stop:
            while state.epoch < config.epochs and reason == "epochs":
                if state.window == 0:
                    hidden = None  # each epoch starts from a zero state
                for window in self.data.epoch_windows(state.epoch)[state.window :]:
                    reason = self._stop_reason_now(stop)
                    if reason != "epochs":
                        break
                    started = time.perf_counter()
                    hidden = self.train_step(window, hidden)
                    self._timed_step(time.perf_counter() - started)
                    state.window += 1
                    if state.step % config.eval_every == 0 or self._validation_due_by_time():
                        last_round = self._no_room_for_another_round()
                        if last_round:
                            self.stop_reason = "max_time"  # recorded in the checkpoint written now
                        self._round(hidden, final=last_round)
                    elif self.watcher and self.watcher.sample_due(state.step):
                        self._sample()
                    if self.stop_reason in ("patience", "max_time"):
                        reason = self.stop_reason
                        break
                else:
                    state.epoch += 1
                    state.window = 0
            self.stop_reason = reason
            if reason in ("SIGINT", "SIGTERM"):
                # Someone is waiting for the stop: save where training is, without a validation pass.
                self._save(hidden, improved=False)
            elif self.loss_count or not state.metrics:
                self._round(hidden, final=True)
            elif self._saved != (state.step, reason):
                self._save(hidden, improved=False)  # so that the last checkpoint says why it stopped
            # No rank leaves before rank 0 has written: torchrun stops the rest when one exits.
            self.dist.barrier()
        return self._finish(reason)

    def _stop_reason_now(self, stop: _StopRequest) -> str:
        """Why training stops now ("epochs": it does not). All ranks agree: a signal or the clock
        seen by one rank stops every rank at the same step."""
        reason = "epochs"
        if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
            reason = "max_steps"
        elif self.config.max_time is not None and self._out_of_time():
            reason = "max_time"
        if stop.signal_name:
            reason = stop.signal_name
        if self.dist.enabled:
            reason = _STOP_REASONS[self.dist.max(_STOP_REASONS.index(reason), self.device)]
        return reason

    # ------------------------------------------------------------------ the --max-time budget

    def _timed_step(self, seconds: float) -> None:
        """What a step takes: the median of the last 31 (a busy machine's odd slow step, and the
        first step of a process, slow with one-time work, is left out), with a margin."""
        if self.state.step - (self.setup.info.resumed_from_step or 0) > 1:
            self._recent_steps.append(seconds)
            self._step_median = statistics.median(self._recent_steps)
        self._step_seconds = 1.5 * self._step_median

    def train_seconds(self) -> float:
        """Seconds this process has spent in training steps (not validating, saving or sampling)."""
        return max(1e-9, self.elapsed() - self._session_elapsed - self._overhead)

    def _agreed(self, flag: bool) -> bool:
        """``flag`` on every rank if it is true on any (their clocks differ)."""
        if self.dist.enabled:
            return bool(self.dist.max(int(flag), self.device))
        return flag

    def _round_estimate(self) -> float:
        """Seconds a validation, its checkpoint and its sample will take: the most of the last
        three measured, with a margin; before any, from the speed of the recent training steps
        (scoring a token costs at most what training on it does) and the size of a checkpoint."""
        sample = self._sample_cost if self.watcher is not None and self.watcher.sampling else 0.0
        if self._round_costs:
            return 1.1 * max(self._round_costs[-3:]) + sample
        step_tokens = self.config.batch_size * self.config.bptt
        scoring = len(self.data.val_ids) * self._step_median / step_tokens
        saving = 0.05 + 3 * 4 * self.model.num_parameters() / 100e6  # weights and two moments at 100 MB/s
        return scoring + saving + sample

    def _out_of_time(self) -> bool:
        """Whether another step would leave too little of ``--max-time`` for the final
        validation and checkpoint (all ranks agree through ``_stop_reason_now``)."""
        reserve = self._round_estimate()
        if self.elapsed() + self._step_seconds + reserve < self.config.max_time:
            return False
        self._reserved = reserve
        return True

    def _validation_due_by_time(self) -> bool:
        """Under --max-time with the default --eval-every: a validation every budget / 6 seconds,
        so a short run still has a curve, and samples while it trains."""
        if not self._time_validations:
            return False
        interval = self.config.max_time / VALIDATIONS_IN_BUDGET
        return self._agreed(self.elapsed() - self._last_validation >= interval)

    def _no_room_for_another_round(self) -> bool:
        """Under --max-time: whether, after this validation, the budget would not hold another
        step and the final round; then this one is the final."""
        if self.config.max_time is None:
            return False
        estimate = self._round_estimate()
        late = self.elapsed() + estimate + self._step_seconds + estimate >= self.config.max_time
        if self._agreed(late):
            self._reserved = estimate
            return True
        return False

    def _round(self, hidden: Hidden | None, final: bool = False) -> None:
        """Validate, write the checkpoints and (when due) a sample, timing it all."""
        started = time.perf_counter()
        self.evaluate_and_save(hidden)
        saved = time.perf_counter()
        self._round_costs.append(saved - started)
        if self.watcher and (
            self.watcher.sample_due(self.state.step, evaluated=True)
            or (final and self.watcher.sampling and self.watcher.last_sample_step != self.state.step)
        ):
            self._sample(timed=False)
            self._sample_cost = time.perf_counter() - saved
        self._overhead += time.perf_counter() - started
        self._last_validation = self.elapsed()
        if final:
            self._final_round = time.perf_counter() - started

    def _sample(self, timed: bool = True) -> None:
        started = time.perf_counter()
        self.watcher.sample(self.state.step, self.last_val)
        if timed:
            self._sample_cost = time.perf_counter() - started
            self._overhead += self._sample_cost

    def _overrun(self, elapsed: float) -> str | None:
        """What ran over ``--max-time`` (by more than BUDGET_TOLERANCE) and why; None: nothing."""
        budget = self.config.max_time
        if budget is None or self.stop_reason != "max_time" or elapsed <= budget * (1 + BUDGET_TOLERANCE):
            return None
        over = f"{elapsed - budget:.1f} s over the {budget:g} s budget"
        if self._final_round is not None and self._reserved is not None and self._final_round > self._reserved:
            return (
                f"{over}: the final validation and checkpoint took {self._final_round:.1f} s where "
                f"{self._reserved:.1f} s had been set aside (measured at the validations before it)"
            )
        if self._reserved is not None and self._reserved > budget:
            return f"{over}: one validation and checkpoint takes about {self._reserved:.1f} s, more than the budget"
        return f"{over}: a training step took longer than the {self._step_seconds:.1f} s the steps before it took"

    def _interrupted(self) -> str:
        """What a second Ctrl-C loses, and how to go on."""
        state, last = self.state, self.run_dir / LAST
        if self._checkpoint_step is None or not last.is_file():
            return f"training stopped at step {state.step:,} before any checkpoint was written; nothing of this run was kept"
        lost = state.step - self._checkpoint_step
        return (
            f"training stopped at step {state.step:,} without saving: the run falls back to its last checkpoint, "
            f"{last} (step {self._checkpoint_step:,}; {lost:,} steps lost); continue with: "
            f"charlstm train --resume {shlex.quote(str(self.run_dir))}"
        )

    # ------------------------------------------------------------------------ one step

    def train_step(self, window: Window, hidden: Hidden | None) -> Hidden | None:
        """One optimizer step on one window, starting from ``hidden``; returns the carried
        (detached) hidden state for the next window.

        A step whose loss or gradient is not finite leaves the weights alone and drops the carried
        state; ``MAX_BAD_STEPS`` of them in a row stop training with ``NumericalError``.
        """
        state = self.state
        self.lr = learning_rate(self.config, state.step, self.planned_steps, self.elapsed())
        for group in self.optimizer.param_groups:  # --variable-bptt: the step scales with the window
            group["lr"] = self.lr * window.length / self.config.bptt if self.config.variable_bptt else self.lr
        x, y = get_window(self.data.stream, window)  # (t, B) each
        with self.setup.precision.autocast(self.device):
            logits, hidden = self.net(x, hidden)  # (t, B, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip)
        # The one host sync per step: a NaN must be seen before the optimizer can spread it into
        # the weights. (With fp16 an inf gradient is the scaler's business: it skips the step
        # and lowers the scale; only a non-finite loss counts as a fault.)
        fp16 = self.scaler.is_enabled()
        finite = bool(torch.isfinite(loss if fp16 else grad_norm))
        if self.dist.enabled:  # a fault on any rank is a fault on all: they skip the step together
            finite = not self.dist.max(int(not finite), self.device)
        if finite or fp16:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.average is not None:
                self.average.update()
        state.step += 1
        state.tokens += x.numel()
        elapsed = self.elapsed()
        self.events.on_step(state.step, loss.detach(), self.tokens_per_s(), elapsed)
        if not finite:
            self._bad_step()
            return None  # a state computed from non-finite values would poison the next windows
        self.bad_steps.clear()
        self.grad_norm = grad_norm.detach()
        self.loss_sum += loss.detach()
        self.loss_count += 1
        # The next window continues these streams: keep the state's values, but stop
        # backpropagation at this boundary (truncated BPTT).
        return detach_hidden(hidden)

    def tokens_per_s(self) -> float:
        """Training tokens per second of training (this process; validation and saving left out)."""
        return (self.state.tokens - self._session_tokens) / self.train_seconds()

    def _bad_step(self) -> None:
        self.bad_steps.append(self.state.step)
        if len(self.bad_steps) < MAX_BAD_STEPS:
            return
        last = self.run_dir / LAST
        kept = (
            f"the last good checkpoint is {last} (step {self.state.metrics[-1]['step']})"
            if self.state.metrics and last.is_file()
            else "no checkpoint had been written yet"
        )
        raise NumericalError(
            f"training stopped: the loss or gradients were not finite (NaN or inf) at steps "
            f"{self.bad_steps[0]}-{self.bad_steps[-1]}; those steps did not change the weights and "
            f"{kept}. Try a lower --lr (this run: {self.config.lr:g}) or a smaller --clip (this run: "
            f"{self.config.clip:g}), or --precision fp32"
        )

    def evaluate_and_save(self, hidden: Hidden | None) -> dict:
        """Validation loss now, a metrics record, ``last.pt`` (and ``best.pt`` when it improved)."""
        state = self.state
        _emit(self.events, "on_validation_start", state.step, len(self.data.val_ids) - 1)  # all but the first
        model = self.model if self.average is None else self.average.model
        val_sum, val_count = stream_loss(  # up to 64 warm streams: a small batch validates as fast
            model, self.data.val_ids, batch_size=max(self.config.batch_size, 64), bptt=self.config.bptt,
            device=self.device, precision=self.setup.precision,
            on_progress=getattr(self.events, "on_validation_progress", None),
        )
        if self.dist.enabled:  # every rank scored its own share of the validation text
            totals = self.dist.sum(torch.tensor([val_sum, val_count], dtype=torch.float64, device=self.device))
            val_sum, val_count = float(totals[0]), int(totals[1])
        self.last_val = val_sum / val_count
        elapsed = self.elapsed()
        record = {
            "step": state.step,
            "time": round(elapsed, 3),
            "train_loss": float(self.loss_sum) / self.loss_count if self.loss_count else None,
            "val_loss": self.last_val,
            "tokens_per_s": self.tokens_per_s(),  # of training alone
            "lr": self.lr,
            "grad_norm": float(self.grad_norm),
        }
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        state.metrics.append(record)
        improved = self.last_val < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, self.last_val)
        if self.stop_reason is None and out_of_patience(state.metrics, self.config.patience):
            self.stop_reason = "patience"  # recorded in the checkpoint written now
        if self.dist.is_main:
            append_metrics(self.run_dir, record)
        self._save(hidden, improved)
        if self.watcher is not None:
            self.watcher.evaluation(record)
        self.events.on_eval(record)
        return record

    def _save(self, hidden: Hidden | None, improved: bool) -> None:
        """Write ``last.pt`` (and ``best.pt``); on every rank, since it gathers their states."""
        state = self.state
        state.elapsed = self.elapsed()
        state.hidden_by_rank, state.torch_rng_by_rank = self.dist.gather_carried(
            hidden, self.model.init_hidden(self.config.batch_size), self.device
        )
        if self.device.type == "cuda":
            state.cuda_rng = torch.cuda.get_rng_state_all()
        if not self.dist.is_main:
            return
        payload = make_payload(
            model=self.model,
            model_config=self.setup.model_config,
            train_config=self.config,
            tokenizer=self.setup.tokenizer,
            optimizer=self.optimizer,
            train_state=state,
            corpus=self.setup.corpus,
            init_from=self.setup.init_from,
            run={"stop_reason": self.stop_reason, "command": self.command},
        )
        best = payload
        if self.average is not None:  # last.pt: the raw weights and the average; best.pt: the average
            best = {**payload, "model": self.average.state_dict()}
            payload["ema"] = self.average.to_checkpoint()
        save_checkpoint(self.run_dir / LAST, payload)
        self._checkpoint_step = state.step
        self._saved = (state.step, self.stop_reason)
        if improved:
            save_checkpoint(self.run_dir / BEST, best)

    def _finish(self, stop_reason: str) -> TrainResult:
        state = self.state
        elapsed, train_seconds = self.elapsed(), self.train_seconds()
        result = TrainResult(
            run_dir=self.run_dir,
            steps=state.step,
            epochs_done=state.epoch + state.window / len(self.data.epoch_windows(state.epoch)),
            elapsed=elapsed,
            tokens_per_s=(state.tokens - self._session_tokens) / train_seconds,
            best_val_loss=state.best_val_loss,
            last_val_loss=self.last_val,
            best_path=self.run_dir / BEST,
            last_path=self.run_dir / LAST,
            stop_reason=stop_reason,
            num_parameters=self.model.num_parameters(),
            metrics=state.metrics,
            train_seconds=train_seconds,
            overhead_seconds=self._overhead,
            max_time=self.config.max_time,
            overrun=self._overrun(elapsed),
        )
        if self.record is not None:
            if result.overrun:
                self.record.record["overrun"] = result.overrun
            self.record.end(f"finished: {stop_reason}")
        self.events.on_end(result)
        return result
