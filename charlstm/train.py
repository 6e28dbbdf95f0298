"""The training loop: truncated backpropagation through time with the hidden state carried from
one window to the next, gradient-norm clipping, AdamW, periodic validation and checkpoints.

No Click and no terminal output here: progress goes to a ``TrainingEvents`` object.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from charlstm import __version__
from charlstm.checkpoint import BEST, LAST, cleanup_temp_files, save_checkpoint
from charlstm.config import ModelConfig, TrainConfig
from charlstm.corpus import (
    batchify,
    get_window,
    min_train_tokens,
    split_train_val,
    windows,
)
from charlstm.errors import DataError, RunDirectoryError
from charlstm.evaluate import stream_loss
from charlstm.model import LSTMLanguageModel, detach_state, select_device
from charlstm.tokenizers import train_tokenizer

RUN_FILES = ("config.json", "metrics.jsonl", BEST, LAST)


@dataclass
class Corpus:
    """The text to train on and how to name it."""

    text: str
    name: str  # shown to the user: a path, or the built-in corpus's description
    stem: str  # default run directory name


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

    def on_step(self, step: int, train_loss: float, tokens_per_s: float, elapsed: float) -> None: ...

    def on_eval(self, record: dict) -> None: ...

    def on_end(self, result: TrainResult) -> None: ...


def holds_run(directory: Path) -> bool:
    return directory.is_dir() and any((directory / name).exists() for name in RUN_FILES)


def prepare_run_dir(
    out: str | os.PathLike | None, stem: str, root: str | os.PathLike = "checkpoints"
) -> Path:
    """The run directory to write to; never one that already holds a run.

    An explicit ``--out`` that holds a run is refused. The default ``checkpoints/<stem>`` moves on
    to ``<stem>-2``, ``<stem>-3``, ... so a second run never overwrites the first.
    """
    if out is not None:
        run_dir = Path(out)
        if run_dir.exists() and not run_dir.is_dir():
            raise RunDirectoryError(f"--out {run_dir}: exists and is not a directory")
        if holds_run(run_dir):
            raise RunDirectoryError(
                f"--out {run_dir}: already holds a run; choose another --out or move that run away"
            )
    else:
        run_dir = Path(root) / stem
        n = 2
        while holds_run(run_dir):
            run_dir = Path(root) / f"{stem}-{n}"
            n += 1
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirectoryError(f"{run_dir}: cannot create the run directory ({e.strerror})") from None
    cleanup_temp_files(run_dir)
    return run_dir


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


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def train(
    corpus: Corpus,
    config: TrainConfig,
    model_options: dict,
    out: str | os.PathLike | None = None,
    events: TrainingEvents | None = None,
) -> TrainResult:
    """Train a model on ``corpus.text`` and write checkpoints to the run directory.

    ``model_options`` are the ``ModelConfig`` fields other than ``vocab_size``, which comes from
    the tokenizer.
    """
    events = events or TrainingEvents()
    device = select_device(config.device)
    torch.manual_seed(config.seed)

    tokenizer = train_tokenizer(config.tokenizer, corpus.text, config.vocab_size)
    model_config = ModelConfig(vocab_size=tokenizer.vocab_size, **model_options)
    ids = tokenizer.encode(corpus.text)
    train_ids, val_ids = split_train_val(ids, config.val_fraction)
    needed = min_train_tokens(config.batch_size, config.bptt)
    if len(train_ids) < needed:
        raise DataError(
            f"{corpus.name}: too short for one batch of windows: training needs at least {needed} "
            f"tokens (--batch-size {config.batch_size} x (--bptt {config.bptt} + 1)) and this text "
            f"gives {len(train_ids)} after holding out --val-fraction {config.val_fraction}; use a longer "
            "text or a smaller --batch-size / --bptt"
        )

    run_dir = prepare_run_dir(out, corpus.stem)
    model = LSTMLanguageModel(model_config).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embedding")]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )

    data = batchify(train_ids, config.batch_size).to(device)  # (T, B)
    epoch_windows = windows(data.size(0), config.bptt)
    planned_steps = config.epochs * len(epoch_windows)
    if config.max_steps is not None:
        planned_steps = min(planned_steps, config.max_steps)

    info = {
        "run_dir": str(run_dir),
        "corpus": corpus.name,
        "device": str(device),
        "tokenizer": tokenizer.kind,
        "vocab_size": tokenizer.vocab_size,
        "num_parameters": model.num_parameters(),
        "train_tokens": int(len(train_ids)),
        "val_tokens": int(len(val_ids)),
        "steps_per_epoch": len(epoch_windows),
        "planned_steps": planned_steps,
        "max_time": config.max_time,
    }
    _write_json(
        run_dir / "config.json",
        {
            "model": model_config.to_dict(),
            "train": config.to_dict(),
            "corpus": {"name": corpus.name, "chars": len(corpus.text)},
            "info": info,
            "versions": {"charlstm": __version__, "torch": torch.__version__},
        },
    )
    events.on_start(info)

    corpus_info = {"name": corpus.name, "chars": len(corpus.text)}
    metrics: list[dict] = []
    best_val = math.inf
    last_val = math.nan
    step = 0
    epoch = 0
    tokens_done = 0
    stopped_by = "epochs"
    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    grad_norm = 0.0
    lr = config.lr
    start = time.perf_counter()

    def checkpoint_payload(state) -> dict:
        return {
            "model_config": model_config.to_dict(),
            "train_config": config.to_dict(),
            "tokenizer": tokenizer.to_state(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "train_state": {
                "step": step,
                "epoch": epoch,
                "tokens": tokens_done,
                "elapsed": time.perf_counter() - start,
                "best_val_loss": best_val,
                "hidden": None if state is None else [t.detach().cpu() for t in state],
                "torch_rng": torch.get_rng_state(),
            },
            "metrics": metrics,
            "corpus": corpus_info,
        }

    def evaluate_and_save(state) -> None:
        nonlocal best_val, last_val, loss_sum, loss_count
        val_sum, val_count = stream_loss(model, val_ids, config.batch_size, config.bptt, device)
        last_val = val_sum / val_count
        elapsed = time.perf_counter() - start
        record = {
            "step": step,
            "time": round(elapsed, 3),
            "train_loss": float(loss_sum) / loss_count if loss_count else None,
            "val_loss": last_val,
            "tokens_per_s": tokens_done / elapsed if elapsed > 0 else 0.0,
            "lr": lr,
            "grad_norm": grad_norm,
        }
        loss_sum, loss_count = torch.zeros((), device=device), 0
        metrics.append(record)
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        payload = checkpoint_payload(state)
        save_checkpoint(run_dir / LAST, payload)
        if last_val < best_val:
            best_val = last_val
            payload["train_state"]["best_val_loss"] = best_val
            save_checkpoint(run_dir / BEST, payload)
        events.on_eval(record)

    model.train()
    state = None
    with _StopRequest() as stop:
        while epoch < config.epochs and stopped_by == "epochs":
            state = None  # each epoch starts from a zero state
            for window in epoch_windows:
                elapsed = time.perf_counter() - start
                if config.max_steps is not None and step >= config.max_steps:
                    stopped_by = "max_steps"
                elif config.max_time is not None and elapsed >= config.max_time:
                    stopped_by = "max_time"
                elif stop.signal_name:
                    stopped_by = stop.signal_name
                if stopped_by != "epochs":
                    break
                lr = learning_rate(config, step, planned_steps, elapsed)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                x, y = get_window(data, window)  # (t, B) each
                logits, state = model(x, state)  # (t, B, V)
                loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip))
                optimizer.step()
                # The next window continues these streams: keep the state's values, but stop
                # backpropagation at this boundary (truncated BPTT).
                state = detach_state(state)
                step += 1
                tokens_done += x.numel()
                loss_sum += loss.detach()
                loss_count += 1
                elapsed = time.perf_counter() - start
                events.on_step(step, loss.item(), tokens_done / elapsed, elapsed)
                if step % config.eval_every == 0:
                    evaluate_and_save(state)
            else:
                epoch += 1
        if stopped_by in ("SIGINT", "SIGTERM"):
            # Someone is waiting for the stop: save where training is, without a validation pass.
            save_checkpoint(run_dir / LAST, checkpoint_payload(state))
        elif loss_count or not metrics:
            evaluate_and_save(state)

    elapsed = time.perf_counter() - start
    result = TrainResult(
        run_dir=run_dir,
        steps=step,
        epochs_done=epoch + (0 if stopped_by == "epochs" else _epoch_fraction(step, len(epoch_windows))),
        elapsed=elapsed,
        tokens_per_s=tokens_done / elapsed if elapsed > 0 else 0.0,
        best_val_loss=best_val,
        last_val_loss=last_val,
        best_path=run_dir / BEST,
        last_path=run_dir / LAST,
        stopped_by=stopped_by,
        num_parameters=model.num_parameters(),
        metrics=metrics,
    )
    events.on_end(result)
    return result


def _epoch_fraction(step: int, steps_per_epoch: int) -> float:
    return (step % steps_per_epoch) / steps_per_epoch
