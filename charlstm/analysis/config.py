"""The long-range experiment's settings (``charlstm experiment``): which models, how long each trains."""

from __future__ import annotations

from dataclasses import dataclass

from charlstm.config import _Checks, _Serializable, setting


MEMORY_TASKS = ("recall", "copy")  # the long-range experiment's tasks (``charlstm.analysis.memory_tasks``)


@dataclass(frozen=True)
class ExperimentConfig(_Serializable):
    """The long-range experiment (``charlstm.analysis.experiment``): which models, how long each trains."""

    tasks: tuple[str, ...] = setting(MEMORY_TASKS, "Comma-separated: recall, copy.")
    distances: tuple[int, ...] = setting((10, 30, 100), "Comma-separated distances d, for every task.")
    seeds: int = setting(3, "Seeds per cell and distance (0, 1, ...).")
    budget: int = setting(
        1000,
        "Training steps per model; a model not solved by then trains on to twice as many (the doubling check).",
    )
    hidden_size: int = setting(64, "The LSTM's hidden size; the GRU and RNN get as many parameters.")
    lr: float = setting(1e-2, "Adam's learning rate, for every cell.")
    curriculum: bool = setting(
        False, "One model per seed climbs the distances in order, moving on when it solves one."
    )
    jobs: int = setting(0, "Processes on a CPU; 0: one per core this process may use.")
    batch_size: int = 32
    embedding_dim: int = 16
    clip: float = 1.0
    solved_at: float = 0.99  # held-out accuracy that counts as solved
    eval_every: int = 50
    eval_sequences: int = 256  # for the solved check; the final accuracy uses 4 x as many, fresh
    # The LSTM runs twice: with charlstm's forget-gate bias of 1 (the usual choice) and with a
    # larger one, which starts the cell path open (f = 0.95 instead of 0.73 per step).
    forget_biases: tuple[float, ...] = (1.0, 3.0)

    def __post_init__(self) -> None:
        c = _Checks(self)
        c.check(
            "tasks",
            lambda tasks: bool(tasks) and all(t in MEMORY_TASKS for t in tasks),
            f"must be some of {', '.join(MEMORY_TASKS)}",
            got=lambda tasks: ", ".join(tasks) or "none",
        )
        c.check(
            "distances",
            lambda distances: bool(distances) and all(1 <= d <= 100_000 for d in distances),
            "must be whole numbers from 1 to 100000",
            got=lambda distances: ", ".join(map(str, distances)) or "none",
        )
        c.at_least("seeds", 1)
        c.at_least("budget", 1)
        c.check("hidden_size", lambda size: 1 <= size <= 4096, "must be from 1 to 4096")
        c.check("lr", lambda lr: lr > 0, "must be above 0")
        c.at_least("jobs", 0)
        c.check(
            "eval_every",
            lambda every: every >= 1 and self.batch_size >= 1,
            "and the batch size must be at least 1",
            got=False,
        )
        c.within("solved_at", "(0, 1]")
        c.raise_if_any()

    def variants(self) -> list[tuple[str, str, float | None]]:
        """(model, cell, forget-gate bias) of every model compared."""
        lstms = [("LSTM" if b == 1.0 else f"LSTM, forget bias {b:g}", "lstm", b) for b in self.forget_biases]
        return [*lstms, ("GRU", "gru", None), ("RNN", "rnn", None)]

    @classmethod
    def quick(cls, **changes) -> ExperimentConfig:
        """A run of seconds, for tests: short distances, small budgets, small models."""
        small = {"distances": (5, 20), "budget": 100, "batch_size": 16, "hidden_size": 16, "eval_every": 25}
        return cls(**{**small, "eval_sequences": 128, **changes})
