"""What a training run writes and measures between its steps: the validation loss, ``last.pt``
and ``best.pt``, the run's ``config.json`` as it starts, and what a second Ctrl-C leaves."""

from __future__ import annotations

import shlex
from pathlib import Path

import torch

from charlstm import __version__
from charlstm.config import TrainConfig
from charlstm.errors import NumericalError
from charlstm.runs.checkpoint import BEST, LAST, TrainState, make_payload, save_checkpoint
from charlstm.runs.directory import RunRecord, recorded_commands
from charlstm.evaluation.evaluate import stream_loss
from charlstm.training.averaging import WeightAverage
from charlstm.training.budget import StopReason
from charlstm.training.setup import TrainingSetup


def validation_loss(setup: TrainingSetup, model, on_progress=None) -> float:
    """The loss of ``model`` on the held-out tokens (every rank scores its share)."""
    config, dist = setup.config, setup.dist
    val_sum, val_count = stream_loss(  # up to 64 warm streams: a small batch validates as fast
        model, setup.data.val_ids, batch_size=max(config.batch_size, 64), bptt=config.bptt,
        device=setup.device, precision=setup.precision, on_progress=on_progress,
    )
    if dist.enabled:
        totals = dist.sum(torch.tensor([val_sum, val_count], dtype=torch.float64, device=setup.device))
        val_sum, val_count = float(totals[0]), int(totals[1])
    return val_sum / val_count


def write_checkpoints(setup: TrainingSetup, state: TrainState, average: WeightAverage | None,
                      stop_reason: StopReason | None, command: list[str] | None, improved: bool) -> None:
    """``last.pt`` (the raw weights, and the average with --ema) and, when the validation loss
    ``improved``, ``best.pt`` (the average with --ema)."""
    reason = None if stop_reason is None else stop_reason.value  # a plain str: weights_only loads it
    payload = make_payload(
        model=setup.model,
        model_config=setup.model_config,
        train_config=setup.config,
        tokenizer=setup.tokenizer,
        optimizer=setup.optimizer,
        train_state=state,
        corpus=setup.corpus,
        init_from=setup.init_from,
        run={"stop_reason": reason, "command": command},
    )
    best = payload
    if average is not None:
        best = {**payload, "model": average.state_dict()}
        payload["ema"] = average.to_checkpoint()
    save_checkpoint(setup.run_dir / LAST, payload)
    if improved:
        save_checkpoint(setup.run_dir / BEST, best)


def open_record(setup: TrainingSetup, config: TrainConfig, command: list[str] | None) -> RunRecord:
    """The run's ``config.json``, written as training starts; a resumed run keeps the command
    that started it and adds this one to its resumes."""
    first, resumes = command, []
    if setup.info.resumed_from_step is not None:
        first, resumes = recorded_commands(setup.run_dir)
        resumes = [*resumes, {"command": command, "step": setup.info.resumed_from_step}]
    return RunRecord(
        setup.run_dir,
        {
            "model": setup.model_config.to_dict(),
            "train": config.to_dict(),
            "corpus": setup.corpus,
            "init_from": setup.init_from,
            "info": setup.info.to_dict(),
            "versions": {"charlstm": __version__, "torch": torch.__version__},
            "command": first,
            "resumes": resumes,
        },
    )


def interrupted_message(step: int, run_dir: Path, checkpoint_step: int | None) -> str:
    """What a second Ctrl-C at ``step`` loses (``last.pt`` holds ``checkpoint_step``), and how to go on."""
    last = run_dir / LAST
    if checkpoint_step is None or not last.is_file():
        return f"training stopped at step {step:,} before any checkpoint was written; nothing of this run was kept"
    return (
        f"training stopped at step {step:,} without saving: the run falls back to its last checkpoint, "
        f"{last} (step {checkpoint_step:,}; {step - checkpoint_step:,} steps lost); continue with: "
        f"charlstm train --resume {shlex.quote(str(run_dir))}"
    )


def non_finite_error(bad_steps: list[int], metrics: list[dict], run_dir: Path, config: TrainConfig) -> NumericalError:
    """The error that stops training after ``MAX_BAD_STEPS`` non-finite steps in a row."""
    last = run_dir / LAST
    kept = (
        f"the last good checkpoint is {last} (step {metrics[-1]['step']})"
        if metrics and last.is_file()
        else "no checkpoint had been written yet"
    )
    return NumericalError(
        f"training stopped: the loss or gradients were not finite (NaN or inf) at steps "
        f"{bad_steps[0]}-{bad_steps[-1]}; those steps did not change the weights and "
        f"{kept}. Try a lower --lr (this run: {config.lr:g}) or a smaller --clip (this run: "
        f"{config.clip:g}), or --precision fp32"
    )
