"""Watching a run learn, beyond its checkpoints and ``metrics.jsonl``: a short sample at chosen
steps (shown through the training events and appended to ``RUN/samples.txt`` with its step and
validation loss) and TensorBoard event files (``--tensorboard``). Rank 0 only.
"""

from __future__ import annotations

from charlstm.atomic import write_error
from charlstm.config import SampleConfig
from charlstm.runs.directory import SAMPLES
from charlstm.generation.sampling import generate
from charlstm.training.tensorboard_log import TensorBoardLog

SAMPLE_LENGTH = 200  # characters of each training sample
SAMPLE_SEED = 1234  # every training sample draws the same random numbers: only the model changes


class Watcher:
    """Samples while training and the TensorBoard log of one run (``setup``: its ``TrainingSetup``).

    Samples come every ``--sample-every`` steps, or by default at each evaluation when the events
    ask for them (``wants_samples``: a terminal shows them; evaluations that ``--max-time`` brings
    forward included); ``--no-samples``: never.
    """

    def __init__(self, setup, events):
        self.setup, self.events = setup, events
        config = setup.config
        self.every = config.sample_every if config.samples else None
        self.at_evaluations = bool(config.samples and self.every is None and getattr(events, "wants_samples", False))
        self.board = TensorBoardLog(setup.run_dir) if config.tensorboard else None
        self.last_sample_step: int | None = None

    @property
    def sampling(self) -> bool:
        return self.every is not None or self.at_evaluations

    def sample_due(self, step: int, evaluated: bool = False) -> bool:
        """Whether a sample is due after ``step`` (``evaluated``: the step was just validated)."""
        if self.every is not None:
            return step % self.every == 0
        return self.at_evaluations and evaluated

    def sample(self, step: int, val_loss: float) -> str:
        """A short sample (fixed prime and seed); the training random numbers are not touched
        (generation draws from a generator of its own)."""
        self.last_sample_step = step
        setup = self.setup
        config = SampleConfig(prime=setup.sample_prime, length=SAMPLE_LENGTH, seed=SAMPLE_SEED, device=setup.device.type)
        text = setup.sample_prime + "".join(p[0] for p in generate(setup.model, setup.tokenizer, config, setup.device))
        setup.model.train()  # generate() put it in eval mode
        path = setup.run_dir / SAMPLES
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"--- step {step}, validation loss {val_loss:.4f}\n{text}\n\n")
        except OSError as e:
            raise write_error(path, e) from None
        if self.board is not None:
            self.board.sample(step, text)
        self.events.on_sample(step, val_loss, text)
        return text

    def evaluation(self, record: dict) -> None:
        if self.board is not None:
            self.board.evaluation(record)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
