"""What a training run tells its caller: ``TrainingEvents`` (hooks for progress) and, at the end,
``TrainResult``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from charlstm.training.setup import TrainInfo


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
    stop_reason: str  # a ``StopReason``: "epochs", "max_steps", "max_time", "patience" or the signal's name
    num_parameters: int
    metrics: list[dict] = field(default_factory=list)
    # This process's seconds (a resumed run's ``elapsed`` also counts those before the resume):
    train_seconds: float = 0.0  # in training steps (``tokens_per_s`` is tokens over these)
    overhead_seconds: float = 0.0  # in validations, checkpoints and samples
    max_time: float | None = None  # the budget (--max-time)
    overrun: str | None = None  # what ran over the budget (beyond BUDGET_TOLERANCE) and why
    stop_detail: str = ""  # why it stopped and how much of the budget it used, in words


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


def emit(events, name: str, *args) -> None:
    """Call an event hook that an events object written before it existed may lack."""
    hook = getattr(events, name, None)
    if hook is not None:
        hook(*args)
