"""The training loop: truncated backpropagation through time with the hidden state carried from
one window to the next, gradient-norm clipping, AdamW, periodic validation and checkpoints.

``train`` and ``resume`` prepare a run (``charlstm.training.setup``) and hand it to a ``Trainer``, which
keeps the loop, the step, evaluation and saving. No Click and no terminal output here: progress
goes to a ``TrainingEvents`` object.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Collection

import torch
import torch.nn.functional as F

from charlstm.data.batches import Window, get_window
from charlstm.cells import Hidden
from charlstm.runs.checkpoint import BEST, LAST
from charlstm.config import ModelShape, TrainConfig
from charlstm.distributed import from_environment, is_main_process, shutdown
from charlstm.errors import CharlstmError
from charlstm.training.budget import (
    PRECEDENCE, Budget, StopReason, StopRequest, agreement, out_of_patience, stop_detail,
)
from charlstm.training.checkpoints import (
    interrupted_message, non_finite_error, open_record, validation_loss, write_checkpoints,
)
from charlstm.training.events import TrainingEvents, TrainResult, emit
from charlstm.training.finetune import InitFrom
from charlstm.runs.lock import RunLock
from charlstm.model import detach_hidden
from charlstm.training.setup import TrainingSetup, planned_steps, prepare_new, prepare_resume
from charlstm.runs.directory import RunRecord, append_metrics, plan_resume
from charlstm.training.tensorboard_log import check_available as check_tensorboard
from charlstm.data.source import Source
from charlstm.training.watching import Watcher

MAX_BAD_STEPS = 3  # non-finite steps in a row before training gives up


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


def learning_rate(config: TrainConfig, step: int, planned_steps: int | None, elapsed: float,
                  end: float | None = None) -> float:
    """Linear warm-up, then a decay (``--lr-schedule``: cosine, or linear) to ``--final-lr-ratio``
    of ``--lr`` by the end of the run; ``constant`` keeps ``--lr`` from the first step to the last.

    The run ends at ``planned_steps`` (None: no limit in steps) or, under ``--max-time``, when
    training reaches ``end`` seconds (default: the budget; the trainer passes the budget less the
    final validation), whichever comes first, so progress is the larger of the two fractions.
    """
    if config.lr_schedule == "constant":
        return config.lr
    warmup = config.warmup_steps if planned_steps is None else min(config.warmup_steps, planned_steps // 10)
    if step < warmup:
        return config.lr * (step + 1) / (warmup + 1)
    progress = 0.0 if planned_steps is None else (step - warmup) / max(1, planned_steps - warmup)
    if config.max_time:
        progress = max(progress, elapsed / (end or config.max_time))
    progress = min(progress, 1.0)
    min_lr = config.lr * config.final_lr_ratio
    if config.lr_schedule == "linear":
        return min_lr + (config.lr - min_lr) * (1 - progress)
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))


def _data_parallel(model, dist, device):
    """The model as training runs it: under torchrun wrapped in DDP, which averages the gradients of
    all ranks in backward() (rank 0's weights are copied to the others when it is built, so every
    rank starts from, and stays at, the same weights)."""
    if not dist.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class Trainer:
    """One training run, handed everything it starts from (``TrainingSetup``): ``run`` trains,
    ``train_step`` is one optimizer step, ``evaluate_and_save`` validates and writes checkpoints.

    ``state`` (a ``TrainState``) is what a checkpoint records about training; the trainer keeps it
    up to date as it goes. ``budget`` (``charlstm.training.budget``) keeps the clock.
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
        self.net = _data_parallel(self.model, self.dist, self.device)
        self.lr = self.config.lr
        self.grad_norm = torch.zeros(())  # a tensor: read at evaluations only
        self.loss_sum = torch.zeros((), device=self.device)  # train loss since the last evaluation
        self.loss_count = 0
        self.bad_steps: list[int] = []  # the current run of non-finite steps
        self.last_val = self.state.metrics[-1]["val_loss"] if self.state.metrics else math.nan
        self._start = time.perf_counter() - self.state.elapsed
        self._session_tokens = self.state.tokens  # where this process started
        self.budget = Budget(
            self.config, val_tokens=len(self.data.val_ids), parameters=self.model.num_parameters(),
            started_at=self.state.elapsed, first_step=setup.info.resumed_from_step or 0,
            agree=agreement(self.dist, self.device),
        )
        self._saved: tuple[int, StopReason | None] | None = None  # (step, stop reason) of the last save
        self._checkpoint_step: int | None = setup.info.resumed_from_step  # what last.pt holds
        self.stop_reason: StopReason | None = None  # known before the last checkpoint is written
        self.watcher: Watcher | None = None  # samples and TensorBoard (rank 0)
        self.record: RunRecord | None = None  # config.json (rank 0)

    def elapsed(self) -> float:
        """Seconds of training, counting those before a resume."""
        return time.perf_counter() - self._start

    def train_seconds(self) -> float:
        """Seconds this process has spent in training steps (not validating, saving or sampling)."""
        return self.budget.train_seconds(self.elapsed())

    @property
    def _sampling(self) -> bool:
        return self.watcher is not None and self.watcher.sampling

    def run(self) -> TrainResult:
        if self.dist.is_main:
            self.record = open_record(self.setup, self.config, self.command)
            self.watcher = Watcher(self.setup, self.events)
        try:
            return self._run()
        except CharlstmError as e:
            if self.record is not None:
                self.record.end(f"failed: {e}")
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the steps since last.pt lost
            message = interrupted_message(self.state.step, self.run_dir, self._checkpoint_step)
            if self.record is not None:
                self.record.end(f"interrupted: {message}")
            raise KeyboardInterrupt(message) from None
        finally:
            if self.watcher is not None:
                self.watcher.close()

    def _run(self) -> TrainResult:
        state, limit = self.state, self.config.epoch_limit
        self.events.on_start(self.setup.info)
        self._start = time.perf_counter() - state.elapsed
        self.model.train()
        reason: StopReason | None = None
        hidden = state.hidden_by_rank[self.dist.rank]
        with StopRequest() as stop:
            while reason is None:
                if limit is not None and state.epoch >= limit:
                    reason = StopReason.EPOCHS
                    break
                if state.window == 0:
                    hidden = None  # each epoch starts from a zero state
                hidden, reason = self._epoch(hidden, stop)
            self.stop_reason = reason
            if reason.by_signal:
                # Someone is waiting for the stop: save where training is, without a validation pass.
                self._save(hidden, improved=False)
            elif self.loss_count or not state.metrics:
                self._round(hidden, final=True)
            elif self._saved != (state.step, reason):
                self._save(hidden, improved=False)  # so that the last checkpoint says why it stopped
            # No rank leaves before rank 0 has written: torchrun stops the rest when one exits.
            self.dist.barrier()
        return self._finish(reason)

    def _epoch(self, hidden: Hidden | None, stop: StopRequest) -> tuple[Hidden | None, StopReason | None]:
        """The rest of the current epoch, from ``state.window``: the carried state, and why
        training stops (None: the epoch ended and training goes on)."""
        state = self.state
        for window in self.data.epoch_windows(state.epoch)[state.window :]:
            reason = self._stop_reason_now(stop)
            if reason is not None:
                return hidden, reason
            started = time.perf_counter()
            hidden = self.train_step(window, hidden)
            self.budget.step_took(time.perf_counter() - started, state.step)
            state.window += 1
            if self._validation_due() and self.budget.room_for_a_round(self.elapsed(), self._sampling):
                self._round(hidden)
            elif self.watcher and self.watcher.sample_due(state.step):
                self._sample()
            if self.stop_reason is not None:  # patience
                return hidden, self.stop_reason
        state.epoch += 1
        state.window = 0
        return hidden, None

    def _validation_due(self) -> bool:
        """Every --eval-every steps; under --max-time with the default --eval-every, by the clock."""
        if self.budget.timed_validations:
            return self.budget.validation_due(self.elapsed())
        return self.state.step % self.config.eval_every == 0

    def _stop_reason_now(self, stop: StopRequest) -> StopReason | None:
        """Why training stops before the next step (None: it goes on). All ranks agree: a signal
        or the clock seen by one rank stops every rank at the same step."""
        reason = None
        if self.config.max_steps is not None and self.state.step >= self.config.max_steps:
            reason = StopReason.MAX_STEPS
        elif self.budget.out_of_time(self.elapsed(), self._sampling):
            reason = StopReason.MAX_TIME
        if stop.signal_name:
            reason = StopReason(stop.signal_name)
        if self.dist.enabled:
            reason = PRECEDENCE[self.dist.max(PRECEDENCE.index(reason), self.device)]
        return reason

    def _round(self, hidden: Hidden | None, final: bool = False) -> None:
        """Validate, write the checkpoints and (when due) a sample, timing it all."""
        started = time.perf_counter()
        self.evaluate_and_save(hidden)
        saved = time.perf_counter()
        sample = None
        if self.watcher and (
            self.watcher.sample_due(self.state.step, evaluated=True)
            or (final and self.watcher.sampling and self.watcher.last_sample_step != self.state.step)
        ):
            self.watcher.sample(self.state.step, self.last_val)
            sample = time.perf_counter() - saved
        self.budget.round_took(saved - started, sample, self.elapsed(), final)

    def _sample(self) -> None:
        started = time.perf_counter()
        self.watcher.sample(self.state.step, self.last_val)
        self.budget.sample_took(time.perf_counter() - started)

    # ------------------------------------------------------------------------ one step

    def train_step(self, window: Window, hidden: Hidden | None) -> Hidden | None:
        """One optimizer step on one window, starting from ``hidden``; returns the carried
        (detached) hidden state for the next window.

        A step whose loss or gradient is not finite leaves the weights alone and drops the carried
        state; ``MAX_BAD_STEPS`` of them in a row stop training with ``NumericalError``.
        """
        state = self.state
        self.lr = learning_rate(
            self.config, state.step, self.planned_steps, self.elapsed(), self.budget.schedule_end(self._sampling)
        )
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
        raise non_finite_error(self.bad_steps, self.state.metrics, self.run_dir, self.config)

    def evaluate_and_save(self, hidden: Hidden | None) -> dict:
        """Validation loss now, a metrics record, ``last.pt`` (and ``best.pt`` when it improved)."""
        state = self.state
        emit(self.events, "on_validation_start", state.step, len(self.data.val_ids) - 1)  # all but the first
        model = self.model if self.average is None else self.average.model
        self.last_val = validation_loss(self.setup, model, getattr(self.events, "on_validation_progress", None))
        record = {
            "step": state.step,
            "time": round(self.elapsed(), 3),
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
            self.stop_reason = StopReason.PATIENCE  # recorded in the checkpoint written now
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
        write_checkpoints(self.setup, state, self.average, self.stop_reason, self.command, improved)
        self._checkpoint_step = state.step
        self._saved = (state.step, self.stop_reason)

    def _finish(self, reason: StopReason) -> TrainResult:
        state = self.state
        elapsed, train_seconds = self.elapsed(), self.train_seconds()
        epochs_done = state.epoch + state.window / len(self.data.epoch_windows(state.epoch))
        result = TrainResult(
            run_dir=self.run_dir,
            steps=state.step,
            epochs_done=epochs_done,
            elapsed=elapsed,
            tokens_per_s=(state.tokens - self._session_tokens) / train_seconds,
            best_val_loss=state.best_val_loss,
            last_val_loss=self.last_val,
            best_path=self.run_dir / BEST,
            last_path=self.run_dir / LAST,
            stop_reason=reason,
            num_parameters=self.model.num_parameters(),
            metrics=state.metrics,
            train_seconds=train_seconds,
            overhead_seconds=self.budget.overhead,
            max_time=self.config.max_time,
            overrun=self.budget.overrun(elapsed, reason),
            stop_detail=stop_detail(
                reason, self.config, elapsed=elapsed, epochs=epochs_done, steps=state.step, metrics=state.metrics
            ),
        )
        if self.record is not None:
            if result.overrun:
                self.record.record["overrun"] = result.overrun
            self.record.record["stop"] = result.stop_detail
            self.record.end(f"finished: {reason.value}")
        self.events.on_end(result)
        return result
