"""The training loop: truncated backpropagation through time with the hidden state carried from
one window to the next, gradient-norm clipping, AdamW, periodic validation and checkpoints.

No Click and no terminal output here: progress goes to a ``TrainingEvents`` object.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm import __version__
from charlstm.checkpoint import BEST, LAST, cleanup_temp_files, load_checkpoint, save_checkpoint
from charlstm.config import FIXED_ON_RESUME, ModelConfig, TrainConfig
from charlstm.corpus import (
    TextSource,
    batchify,
    get_window,
    min_train_tokens,
    split_train_val,
    windows,
)
from charlstm.distributed import device_for, from_environment, shutdown
from charlstm.errors import (
    CharlstmError,
    CheckpointError,
    ConfigError,
    DataError,
    NumericalError,
    RunDirectoryError,
)
from charlstm.evaluate import stream_loss
from charlstm.model import (
    LSTMLanguageModel,
    detach_state,
    resolve_precision,
    select_device,
    upgrade_state_dict,
)
from charlstm.runs import corpus_record, prepare_run_dir, source_of, token_ids, write_json
from charlstm.tokenizers import tokenizer_from_state, train_tokenizer

MAX_BAD_STEPS = 3  # non-finite steps in a row before training gives up
_STOP_REASONS = ("epochs", "max_steps", "max_time", "SIGINT", "SIGTERM")  # in order of precedence


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
    stopped_by: str  # "epochs", "max_steps", "max_time" or the signal's name
    num_parameters: int
    metrics: list[dict] = field(default_factory=list)


class TrainingEvents:
    """Hooks the caller overrides to show progress; the defaults do nothing."""

    def on_start(self, info: dict) -> None: ...

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        """``train_loss`` is a 0-dim tensor: reading it (``float``) waits for the GPU, so read it
        only when it is shown."""

    def on_eval(self, record: dict) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


def learning_rate(config: TrainConfig, step: int, planned_steps: int, elapsed: float) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``--lr`` by the end of the run.

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
    min_lr = config.lr * 0.1
    return min_lr + 0.5 * (config.lr - min_lr) * (1 + math.cos(math.pi * progress))


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


def train(
    source: TextSource,
    config: TrainConfig,
    model_options: dict,
    out: str | os.PathLike | None = None,
    events: TrainingEvents | None = None,
) -> TrainResult:
    """Train a model on ``source`` and write checkpoints to the run directory.

    ``model_options`` are the ``ModelConfig`` fields other than ``vocab_size``, which comes from
    the tokenizer.
    """
    return Trainer(source, config, model_options, out, events).run()


def resume(
    run: str | os.PathLike,
    source: TextSource | None = None,
    changes: dict | None = None,
    events: TrainingEvents | None = None,
) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (see ``Trainer.resuming``)."""
    return Trainer.resuming(run, source, changes or {}, events).run()


class Trainer:
    """One training run: everything is checked and built in ``__init__``, ``run`` trains.

    A new run trains its tokenizer on the text (one pass that also checks every byte) before
    anything is written. A resumed run (``Trainer.resuming``) takes the tokenizer, weights,
    optimizer, counters, data position, carried hidden state and RNG state from its checkpoint.
    """

    def __init__(
        self,
        source: TextSource,
        config: TrainConfig,
        model_options: dict,
        out: str | os.PathLike | None = None,
        events: TrainingEvents | None = None,
        *,
        resume_from: dict | None = None,
        run_dir: str | os.PathLike | None = None,
    ):
        self.source = source
        self.config = config
        # Under torchrun: one process per device, each training on its own shard of the text.
        self.dist = from_environment(config.device)
        self.events = (events or TrainingEvents()) if self.dist.is_main else TrainingEvents()
        self.device = device_for(self.dist, select_device(config.device))
        self.amp_dtype, precision = resolve_precision(config.precision, self.device)
        # fp16 needs its loss scaled so small gradients do not underflow; bf16 and fp32 do not.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        torch.manual_seed(config.seed)

        created = None
        if resume_from is None:
            # Pass 1 over the text (rank 0): train the tokenizer, check every byte. Nothing is
            # written before that has worked.
            def first_pass():
                tokenizer = train_tokenizer(
                    config.tokenizer, source.chunks(), config.vocab_size, size_hint=source.size_hint()
                )
                return tokenizer.to_state(), *prepare_run_dir(out, source.stem)

            state, run_dir, created = self._on_main(first_pass)
            created = created if self.dist.is_main else None  # only rank 0 made (and may remove) it
            self.tokenizer = tokenizer_from_state(state)
            self.run_dir = Path(run_dir)
        else:
            self.tokenizer = tokenizer_from_state(resume_from["tokenizer"])
            self.run_dir = Path(run_dir)
        try:
            expected = None if resume_from is None else resume_from["corpus"]["sha256"]
            ids = self._on_main(lambda: self._token_ids(expected))
            if not self.dist.is_main:  # rank 0 has written the token file; read it, or make one here
                ids = self._token_ids(expected, shared=True)
            train_ids, val_ids = split_train_val(ids, config.val_fraction)
            self.val_tokens_total = len(val_ids)
            # Each rank trains on one contiguous shard and validates on one; all shards are the
            # same length, so every rank runs the same number of windows (DDP needs that).
            train_ids, val_ids = self._shard(train_ids), self._shard(val_ids)
            # A huge corpus's validation split would take longer to score than training between
            # evaluations: score its first --eval-tokens (charlstm eval measures a whole file).
            self.val_ids = val_ids[: max(2, config.eval_tokens // self.dist.world_size)]
            needed = min_train_tokens(config.batch_size, config.bptt)
            if len(train_ids) < needed:
                per_rank = f" per process ({self.dist.world_size} processes)" if self.dist.enabled else ""
                raise DataError(
                    f"{source.name}: too short for one batch of windows: training needs at least {needed} "
                    f"tokens{per_rank} (--batch-size {config.batch_size} x (--bptt {config.bptt} + 1)) and "
                    f"this text gives {len(train_ids)} after holding out --val-fraction "
                    f"{config.val_fraction}; use a longer text or a smaller --batch-size / --bptt"
                )
        except BaseException:
            if created is not None:  # leave nothing behind for a text that cannot be trained on
                shutil.rmtree(created, ignore_errors=True)
            raise

        self.model_config = ModelConfig(vocab_size=self.tokenizer.vocab_size, **model_options)
        self.model = LSTMLanguageModel(self.model_config).to(self.device)
        named = list(self.model.named_parameters())
        decay = [p for n, p in named if p.dim() >= 2 and not n.startswith("embedding")]
        no_decay = [p for n, p in named if p.dim() < 2 or n.startswith("embedding")]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.lr,
            # One fused kernel for all parameters: ~8x faster than the per-tensor loop on CPU.
            fused=self.device.type in ("cpu", "cuda"),
        )
        # Dropout masks differ between ranks; the initial weights (drawn above) do not.
        if self.dist.enabled:
            torch.manual_seed(config.seed + self.dist.rank)
        # On the CPU the (T, B) stream stays a view of the memory-mapped token file.
        self.data = batchify(train_ids, config.batch_size).to(self.device)  # (T, B)
        self.epoch_windows = windows(self.data.size(0), config.bptt)
        self.planned_steps = config.epochs * len(self.epoch_windows)
        if config.max_steps is not None:
            self.planned_steps = min(self.planned_steps, config.max_steps)

        self.metrics: list[dict] = []
        self.best_val = math.inf
        self.last_val = math.nan
        self.step = 0
        self.epoch = 0
        self.window_index = 0  # position in the epoch: the next window to train on
        self.tokens_done = 0
        self.elapsed_before = 0.0  # training time of the run before it was resumed
        self.carried_state = None  # the hidden state to start from (a resumed run's)
        self.resumed_from: int | None = None
        self.lr = config.lr
        self.grad_norm = torch.zeros(())  # a tensor: read at evaluations only
        self.loss_sum = torch.zeros((), device=self.device)  # train loss since the last evaluation
        self.loss_count = 0
        self.bad_steps: list[int] = []  # the current run of non-finite steps
        if resume_from is not None:
            self._restore(resume_from)
        # DDP averages the gradients of all ranks in backward(); rank 0's weights are copied to
        # the others when it is built, so every rank starts from (and stays at) the same weights.
        self.net = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.info = {
            "run_dir": str(self.run_dir),
            "corpus": source.name,
            "device": str(self.device),
            "precision": precision,
            "tokenizer": self.tokenizer.kind,
            "vocab_size": self.tokenizer.vocab_size,
            "num_parameters": self.model.num_parameters(),
            "train_tokens": len(train_ids) * self.dist.world_size,
            "val_tokens": self.val_tokens_total,
            "val_tokens_scored": len(self.val_ids) * self.dist.world_size,
            "world_size": self.dist.world_size,
            "backend": self.dist.backend,
            "global_batch": config.batch_size * self.dist.world_size,
            "token_cache": self.token_cache,
            "replacements": self.text_stats["replacements"],
            "steps_per_epoch": len(self.epoch_windows),
            "planned_steps": self.planned_steps,
            "max_time": config.max_time,
            "resumed_from_step": self.resumed_from,
        }
        self.start = time.perf_counter()

    # ------------------------------------------------------------------------------ resuming

    @classmethod
    def resuming(
        cls,
        run: str | os.PathLike,
        source: TextSource | None = None,
        changes: dict | None = None,
        events: TrainingEvents | None = None,
    ) -> Trainer:
        """A trainer that continues ``run`` (a run directory, or one of its checkpoint files).

        ``changes`` are the settings the user gave now (``TrainConfig``/``ModelConfig`` field
        names). Those that fix the model's shape, the tokens or the data order must match the run;
        every difference is listed. ``source`` defaults to the text the run was trained on.
        """
        changes = dict(changes or {})
        path = Path(run)
        if not path.exists():
            raise RunDirectoryError(f"--resume {run}: no such run directory")
        if path.is_dir():
            checkpoint, run_dir = path / LAST, path
            if not checkpoint.is_file():
                raise RunDirectoryError(
                    f"--resume {run}: no {LAST} in this directory, so there is nothing to resume "
                    "(is it a charlstm run directory?)"
                )
        else:
            checkpoint, run_dir = path, path.parent
        cleanup_temp_files(run_dir)  # what an interrupted save left is never a checkpoint
        payload = load_checkpoint(checkpoint)
        if not isinstance(payload.get("train_state"), dict) or "optimizer" not in payload:
            raise CheckpointError(f"{checkpoint}: holds no training state, so it cannot be resumed")

        saved_model, saved_train = payload["model_config"], payload["train_config"]
        differences = [
            f"--{name.replace('_', '-')} {changes[name]!r} (the run has {saved[name]!r})"
            for saved, names in (
                (saved_model, FIXED_ON_RESUME["model"]),
                (saved_train, FIXED_ON_RESUME["train"]),
            )
            for name in names
            if name in changes and changes[name] != saved.get(name)
        ]
        if differences:
            raise ConfigError(
                f"cannot resume {run_dir} with changed settings: {'; '.join(differences)}. These fix the "
                "model, its tokens or the order of the data; leave them out, or start a new run"
            )
        model_fields = set(saved_model) - {"vocab_size"}
        model_options = {k: changes.get(k, v) for k, v in saved_model.items() if k in model_fields}
        config = TrainConfig.from_dict(
            {**saved_train, **{k: v for k, v in changes.items() if k not in model_fields}}
        )

        state = payload["train_state"]
        done = (
            f"--epochs {config.epochs}"
            if state["epoch"] >= config.epochs
            else f"--max-steps {config.max_steps}"
            if config.max_steps is not None and state["step"] >= config.max_steps
            else f"--max-time {config.max_time:g}"
            if config.max_time is not None and state["elapsed"] >= config.max_time
            else None
        )
        if done:
            raise RunDirectoryError(
                f"--resume {run_dir}: the run already reached {done} (step {state['step']}, epoch "
                f"{state['epoch']}); raise --epochs, --max-steps or --max-time to train further"
            )
        saved_world = state.get("world_size", 1)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if saved_world != world:
            raise ConfigError(
                f"cannot resume {run_dir} with {world} process(es): it was trained with {saved_world}, and "
                "the processes' shares of the text and their carried states depend on that number; "
                + (
                    "run it without torchrun"
                    if saved_world == 1
                    else f"use torchrun --nproc-per-node {saved_world}"
                )
                + " (a checkpoint loads for sample and eval in a single process either way)"
            )
        if source is None:
            source = source_of(payload["corpus"], config.encoding_errors)
        return cls(source, config, model_options, events=events, resume_from=payload, run_dir=run_dir)

    def _restore(self, payload: dict) -> None:
        self.model.load_state_dict(upgrade_state_dict(payload["model"]))
        self.optimizer.load_state_dict(payload["optimizer"])
        # Settings that may change on resume win over the saved optimizer's.
        self.optimizer.param_groups[0]["weight_decay"] = self.config.weight_decay
        state = payload["train_state"]
        self.step, self.epoch = state["step"], state["epoch"]
        self.window_index = state.get("window", self.step - self.epoch * len(self.epoch_windows))
        self.tokens_done = state["tokens"]
        self.elapsed_before = state["elapsed"]
        self.best_val = state["best_val_loss"]
        self.metrics = list(payload.get("metrics", []))
        self.last_val = self.metrics[-1]["val_loss"] if self.metrics else math.nan
        rank = self.dist.rank
        hidden = state["hidden_by_rank"][rank] if "hidden_by_rank" in state else state.get("hidden")
        if hidden is not None:
            self.carried_state = tuple(t.to(self.device) for t in hidden)
        # Last, so nothing above draws from the generators: the run goes on with the same numbers.
        torch.set_rng_state(
            state["torch_rng_by_rank"][rank] if "torch_rng_by_rank" in state else state["torch_rng"]
        )
        if self.device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.resumed_from = self.step
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "w") as f:  # drop records newer than the checkpoint
                f.writelines(json.dumps(record) + "\n" for record in self.metrics)

    # ------------------------------------------------------------------------------ processes

    def _on_main(self, work):
        """``work()`` on rank 0 only, its result on every rank; a user error raised there is
        raised on every rank, so no process waits for one that has given up."""
        result = error = None
        if self.dist.is_main:
            try:
                result = work()
            except CharlstmError as e:
                error = e
        if self.dist.enabled:
            shared, error = self.dist.broadcast((None if error else _portable(result), error))
            if not self.dist.is_main:
                result = shared
        if error is not None:
            raise error
        return result

    def _shard(self, ids):
        """This rank's contiguous share of ``ids``; every share has the same length."""
        length = len(ids) // self.dist.world_size
        return ids[self.dist.rank * length : (self.dist.rank + 1) * length]

    # ------------------------------------------------------------------------------ the tokens

    def _token_ids(self, expected_sha256: str | None, shared: bool = False):
        """The text's ids from the run's token file (see ``runs.token_ids``)."""
        private = f"charlstm-rank{self.dist.rank}-" if shared else None
        ids, self.text_stats, self.token_cache = token_ids(
            self.run_dir, self.source, self.tokenizer, expected_sha256, private
        )
        return ids

    # ------------------------------------------------------------------------------ training

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            shutdown(self.dist)

    def _run(self) -> TrainResult:
        config = self.config
        if self.dist.is_main:
            write_json(
                self.run_dir / "config.json",
                {
                    "model": self.model_config.to_dict(),
                    "train": config.to_dict(),
                    "corpus": self._corpus_record(),
                    "info": self.info,
                    "versions": {"charlstm": __version__, "torch": torch.__version__},
                },
            )
        self.events.on_start(self.info)
        self.start = time.perf_counter() - self.elapsed_before
        self.model.train()
        stopped_by = "epochs"
        state = self.carried_state
        with _StopRequest() as stop:
            while self.epoch < config.epochs and stopped_by == "epochs":
                if self.window_index == 0:
                    state = None  # each epoch starts from a zero state
                for window in self.epoch_windows[self.window_index :]:
                    stopped_by = self._stop_reason(stop)
                    if stopped_by != "epochs":
                        break
                    state = self.train_step(window, state)
                    self.window_index += 1
                    if self.step % config.eval_every == 0:
                        self._evaluate_and_save(state)
                else:
                    self.epoch += 1
                    self.window_index = 0
            if stopped_by in ("SIGINT", "SIGTERM"):
                # Someone is waiting for the stop: save where training is, without a validation pass.
                payload = self._payload(state)
                if self.dist.is_main:
                    save_checkpoint(self.run_dir / LAST, payload)
            elif self.loss_count or not self.metrics:
                self._evaluate_and_save(state)
            # No rank leaves before rank 0 has written: torchrun stops the rest when one exits.
            self.dist.barrier()
        return self._finish(stopped_by)

    def _stop_reason(self, stop: _StopRequest) -> str:
        """Why training stops now ("epochs": it does not). All ranks agree: a signal or the clock
        seen by one rank stops every rank at the same step."""
        reason = "epochs"
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            reason = "max_steps"
        elif self.config.max_time is not None and self.elapsed() >= self.config.max_time:
            reason = "max_time"
        if stop.signal_name:
            reason = stop.signal_name
        if self.dist.enabled:
            reason = _STOP_REASONS[self.dist.max(_STOP_REASONS.index(reason), self.device)]
        return reason

    def train_step(self, window, state):
        """One optimizer step on one window; returns the carried (detached) state.

        A step whose loss or gradient is not finite leaves the weights alone and drops the carried
        state; ``MAX_BAD_STEPS`` of them in a row stop training with ``NumericalError``.
        """
        self.lr = learning_rate(self.config, self.step, self.planned_steps, self.elapsed())
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        x, y = get_window(self.data, window)  # (t, B) each
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits, state = self.net(x, state)  # (t, B, V)
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
        self.step += 1
        self.tokens_done += x.numel()
        elapsed = self.elapsed()
        self.events.on_step(self.step, loss.detach(), self.tokens_done / elapsed, elapsed)
        if not finite:
            self._bad_step()
            return None  # a state computed from non-finite values would poison the next windows
        self.bad_steps.clear()
        self.grad_norm = grad_norm.detach()
        self.loss_sum += loss.detach()
        self.loss_count += 1
        # The next window continues these streams: keep the state's values, but stop
        # backpropagation at this boundary (truncated BPTT).
        return detach_state(state)

    def _bad_step(self) -> None:
        self.bad_steps.append(self.step)
        if len(self.bad_steps) < MAX_BAD_STEPS:
            return
        last = self.run_dir / LAST
        kept = (
            f"the last good checkpoint is {last} (step {self.metrics[-1]['step']})"
            if self.metrics and last.is_file()
            else "no checkpoint had been written yet"
        )
        raise NumericalError(
            f"training stopped: the loss or gradients were not finite (NaN or inf) at steps "
            f"{self.bad_steps[0]}-{self.bad_steps[-1]}; those steps did not change the weights and "
            f"{kept}. Try a lower --lr (this run: {self.config.lr:g}) or a smaller --clip (this run: "
            f"{self.config.clip:g}), or --precision fp32"
        )

    def _evaluate_and_save(self, state) -> None:
        val_sum, val_count = stream_loss(
            self.model, self.val_ids, self.config.batch_size, self.config.bptt, self.device, self.amp_dtype
        )
        if self.dist.enabled:  # every rank scored its own share of the validation text
            totals = self.dist.sum(
                torch.tensor([val_sum, val_count], dtype=torch.float64, device=self.device)
            )
            val_sum, val_count = float(totals[0]), int(totals[1])
        self.last_val = val_sum / val_count
        elapsed = self.elapsed()
        record = {
            "step": self.step,
            "time": round(elapsed, 3),
            "train_loss": float(self.loss_sum) / self.loss_count if self.loss_count else None,
            "val_loss": self.last_val,
            "tokens_per_s": self.tokens_done / elapsed if elapsed > 0 else 0.0,
            "lr": self.lr,
            "grad_norm": float(self.grad_norm),
        }
        self.loss_sum, self.loss_count = torch.zeros((), device=self.device), 0
        self.metrics.append(record)
        improved = self.last_val < self.best_val
        self.best_val = min(self.best_val, self.last_val)
        payload = self._payload(state)  # on every rank: it gathers their states
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            save_checkpoint(self.run_dir / LAST, payload)
            if improved:
                save_checkpoint(self.run_dir / BEST, payload)
        self.events.on_eval(record)

    def _corpus_record(self) -> dict:
        return corpus_record(self.source, self.text_stats)

    def _payload(self, state) -> dict:
        train_state = {
            "step": self.step,
            "epoch": self.epoch,
            "window": self.window_index,
            "tokens": self.tokens_done,
            "elapsed": self.elapsed(),
            "best_val_loss": self.best_val,
            "hidden": None if state is None else [t.detach().cpu() for t in state],
            "torch_rng": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            train_state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.dist.enabled:
            # Each rank carries its own streams' state and draws its own dropout masks: keep all of
            # them, so a resumed run goes on exactly on every rank.
            shape = (len(self.model.init_state(1)), *self.model.init_state(self.config.batch_size)[0].shape)
            hidden = (
                torch.stack(list(state))
                if state is not None
                else torch.full(shape, math.nan, device=self.device)
            )
            rng = torch.get_rng_state().to(self.device)
            gathered = self.dist.gather([hidden, rng])
            train_state["hidden_by_rank"] = [
                None if torch.isnan(h).all() else [t.cpu() for t in h] for h, _ in gathered
            ]
            train_state["torch_rng_by_rank"] = [r.cpu() for _, r in gathered]
            train_state["world_size"] = self.dist.world_size
        return {
            "model_config": self.model_config.to_dict(),
            "train_config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_state(),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "train_state": train_state,
            "metrics": self.metrics,
            "corpus": self._corpus_record(),
        }

    def _finish(self, stopped_by: str) -> TrainResult:
        elapsed = self.elapsed()
        steps_per_epoch = len(self.epoch_windows)
        result = TrainResult(
            run_dir=self.run_dir,
            steps=self.step,
            epochs_done=self.epoch + self.window_index / steps_per_epoch,
            elapsed=elapsed,
            tokens_per_s=self.tokens_done / elapsed if elapsed > 0 else 0.0,
            best_val_loss=self.best_val,
            last_val_loss=self.last_val,
            best_path=self.run_dir / BEST,
            last_path=self.run_dir / LAST,
            stopped_by=stopped_by,
            num_parameters=self.model.num_parameters(),
            metrics=self.metrics,
        )
        self.events.on_end(result)
        return result


def _portable(result):
    """Rank 0's results as plain data for the other ranks (a memory map does not travel)."""
    if isinstance(result, np.ndarray):
        return None
    return result
