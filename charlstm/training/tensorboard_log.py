"""TensorBoard event files for a run (``--tensorboard``), through PyTorch's ``SummaryWriter``.

The ``tensorboard`` package is an optional extra (``pip install charlstm[tensorboard]``); without
it ``--tensorboard`` is one clear error before any work is done.
"""

from __future__ import annotations

from pathlib import Path

from charlstm.errors import CharlstmError

DIRECTORY = "tensorboard"  # inside the run directory


def check_available() -> None:
    """Refuse ``--tensorboard`` when the package it needs is not installed."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise CharlstmError(
            "--tensorboard needs the tensorboard package, which is not installed: pip install tensorboard "
            "(or pip install 'charlstm[tensorboard]'), or leave out --tensorboard"
        ) from None


class TensorBoardLog:
    """Scalars at each evaluation (train and validation loss, learning rate, gradient norm,
    tokens/s) and the samples as text, under ``RUN/tensorboard/``."""

    def __init__(self, run_dir: Path):
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.directory = Path(run_dir) / DIRECTORY
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def evaluation(self, record: dict) -> None:
        step = record["step"]
        if record.get("train_loss") is not None:
            self.writer.add_scalar("loss/train", record["train_loss"], step)
        self.writer.add_scalar("loss/validation", record["val_loss"], step)
        self.writer.add_scalar("lr", record["lr"], step)
        self.writer.add_scalar("grad_norm", record["grad_norm"], step)
        self.writer.add_scalar("tokens_per_s", record["tokens_per_s"], step)
        self.writer.flush()

    def sample(self, step: int, text: str) -> None:
        # TensorBoard renders text as markdown: four spaces make it a code block, kept as it is.
        self.writer.add_text("sample", "    " + text.replace("\n", "\n    "), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
