"""The long-range experiment: how far back can an LSTM, a GRU and a tanh RNN remember?

For every task (``memory_tasks``), cell, distance and seed, a fresh one-layer model with the same
parameter budget is trained on fresh random batches until it *solves* the task (held-out accuracy
≥ ``solved_at``, checked every ``eval_every`` steps) or until ``2 × budget`` steps. A model counts
as solved within the budget when it got there in ``budget`` steps; the models that needed the
second half are the doubling check: when there are none, doubling the budget changed no outcome.

With ``curriculum``, one model per (task, cell, seed) climbs the distances in order instead,
moving on when it solves one (each stage with the same step budget) and stopping at the first it
cannot solve.

Jobs run in parallel, one process per CPU core with one thread each (tiny models use one core
best), or one after another on a GPU. The gradient and forget-gate probes (``memory_probes``)
then look inside models that learnt.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.memory_tasks import TASKS, MemoryModel, MemoryTask, accuracy, hidden_for_budget, parameter_count


@dataclass(frozen=True)
class ExperimentConfig:
    tasks: tuple[str, ...] = TASKS
    recall_distances: tuple[int, ...] = (10, 30, 100)
    copy_distances: tuple[int, ...] = (10, 30, 100)
    seeds: tuple[int, ...] = (0, 1, 2)
    budget: int = 1000  # optimizer steps; an unsolved model goes on to 2 × budget (the doubling check)
    batch_size: int = 32
    embedding_dim: int = 16
    lstm_hidden: int = 64  # the LSTM's size; the GRU and RNN get the same parameter budget
    lr: float = 1e-2  # measured: at 3e-3 the GRU needs 5-10x more steps at d = 30; at 2e-2 nothing gains
    clip: float = 1.0
    solved_at: float = 0.99  # held-out accuracy that counts as solved
    eval_every: int = 50
    eval_sequences: int = 256  # for the solved check; the final accuracy uses 4 × as many, fresh
    # The LSTM runs twice: with charlstm's forget-gate bias of 1 (the usual choice) and with a
    # larger one, which starts the cell path open (f = 0.95 instead of 0.73 per step).
    lstm_forget_biases: tuple[float, ...] = (1.0, 3.0)
    curriculum: bool = False
    jobs: int = 0  # processes on a CPU; 0: one per core

    def distances(self, task: str) -> tuple[int, ...]:
        return self.recall_distances if task == "recall" else self.copy_distances

    def variants(self) -> list[tuple[str, str, float | None]]:
        """(label, cell, forget-gate bias) of every model compared."""
        lstms = [
            ("LSTM" if b == 1.0 else f"LSTM, forget bias {b:g}", "lstm", b) for b in self.lstm_forget_biases
        ]
        return [*lstms, ("GRU", "gru", None), ("RNN", "rnn", None)]

    @classmethod
    def quick(cls) -> ExperimentConfig:
        """A run of seconds, for tests: short distances, small budgets, small models."""
        return cls(
            recall_distances=(5, 20),
            copy_distances=(5,),
            budget=100,
            batch_size=16,
            lstm_hidden=16,
            eval_every=25,
            eval_sequences=128,
        )


@dataclass
class Result:
    task: str
    model: str  # the variant's label
    cell: str
    distance: int
    seed: int
    hidden_size: int
    parameters: int
    steps: int | None  # steps until held-out accuracy reached solved_at; None: not within 2 × budget
    accuracy_at_budget: float  # held-out accuracy after `budget` steps (or when solved before)
    accuracy: float  # final held-out accuracy, on fresh sequences
    seconds: float
    curriculum: bool = False

    def solved(self, within: int) -> bool:
        return self.steps is not None and self.steps <= within


@dataclass
class Job:
    """One model's training: a single distance, or a curriculum's distances in order."""

    config: ExperimentConfig
    task: str
    label: str
    cell: str
    forget_bias: float | None
    hidden: int
    distances: tuple[int, ...]
    seed: int
    device: str = "cpu"

    def cost(self) -> int:
        return sum(self.distances)


def train_job(job: Job) -> tuple[list[Result], dict[str, torch.Tensor]]:
    """Train one model through its distances; its results (one per distance reached) and weights."""
    config, task = job.config, MemoryTask(job.task)
    salt = TASKS.index(job.task) * 1_000_003 + sum(map(ord, job.label)) * 10_007 + job.distances[0]
    torch.manual_seed(job.seed * 7_919 + salt)
    generator = torch.Generator().manual_seed(job.seed * 7_919 + salt + 1)
    model = MemoryModel(job.cell, task, config.embedding_dim, job.hidden, job.forget_bias).to(job.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    parameters = sum(p.numel() for p in model.parameters())
    results = []
    for distance in job.distances:
        start, steps, at_budget = time.perf_counter(), None, None
        held_out = 1_000_000 + distance  # the same held-out sequences for every model at this distance
        for step in range(1, 2 * config.budget + 1):
            ids, target = task.batch(distance, config.batch_size, generator)
            logits = model(ids.to(job.device))
            loss = F.cross_entropy(logits.flatten(0, 1), target.to(job.device).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if step % config.eval_every == 0 or step == config.budget:
                score = accuracy(model, task, distance, config.eval_sequences, held_out)
                if step == config.budget:
                    at_budget = score
                if score >= config.solved_at:
                    steps = step
                    break
        final = accuracy(model, task, distance, 4 * config.eval_sequences, held_out + 500_000)
        results.append(
            Result(
                job.task,
                job.label,
                job.cell,
                distance,
                job.seed,
                job.hidden,
                parameters,
                steps,
                final if at_budget is None else at_budget,
                final,
                time.perf_counter() - start,
                curriculum=config.curriculum,
            )
        )
        if steps is None:
            break  # a curriculum stops at the first distance it cannot solve
    return results, {name: tensor.cpu() for name, tensor in model.state_dict().items()}


def _one_thread(job: Job):
    torch.set_num_threads(1)
    return train_job(job)


@dataclass
class Report:
    config: ExperimentConfig
    device: str = "cpu"
    results: list[Result] = field(default_factory=list)
    weights: dict[tuple[str, str, int, int], dict[str, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )
    seconds: float = 0.0
    # filled by memory_probes: label -> [(k, mean ||dloss/dh_{T-k}||)] and what was measured
    gradients: dict[str, dict] = field(default_factory=dict)
    forget_gates: dict = field(default_factory=dict)

    def runs(self, task: str, label: str, distance: int) -> list[Result]:
        return [
            r
            for r in self.results
            if (r.task, r.model, r.distance) == (task, label, distance) and not r.curriculum
        ]

    def summary(self, task: str, label: str, distance: int, within: int | None = None) -> dict:
        """Over seeds: how many solved within ``within`` steps (default 2 × budget), the median and
        range of the steps it took and of the final accuracy."""
        runs = self.runs(task, label, distance)
        within = within or 2 * self.config.budget
        steps = sorted(r.steps for r in runs if r.solved(within))
        accuracies = sorted(r.accuracy for r in runs)
        return {
            "seeds": len(runs),
            "solved": len(steps),
            "median_steps": statistics.median(steps) if steps else None,
            "steps": steps,
            "median_accuracy": statistics.median(accuracies) if accuracies else None,
            "accuracy_range": (accuracies[0], accuracies[-1]) if accuracies else None,
        }

    def needed_the_doubling(self) -> list[Result]:
        """The models that solved only after ``budget`` steps: the outcomes doubling changed."""
        budget = self.config.budget
        return [r for r in self.results if r.steps is not None and r.steps > budget]

    def longest_solved(self, task: str, label: str) -> int | None:
        """The longest distance where at least one seed solved ``task`` (single-distance runs)."""
        solved = [
            r.distance
            for r in self.results
            if (r.task, r.model) == (task, label) and r.steps and not r.curriculum
        ]
        return max(solved, default=None)

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "device": self.device,
            "seconds": self.seconds,
            "results": [asdict(r) for r in self.results],
            "needed_the_doubling": [asdict(r) for r in self.needed_the_doubling()],
            "gradients": self.gradients,
            "forget_gates": self.forget_gates,
        }


def plan(config: ExperimentConfig, device: str) -> list[Job]:
    """Every model to train, the longest first (so parallel workers finish together)."""
    jobs = []
    for task_name in config.tasks:
        task = MemoryTask(task_name)
        budget = parameter_count("lstm", config.lstm_hidden, task, config.embedding_dim)
        distances = config.distances(task_name)
        for label, cell, forget_bias in config.variants():
            hidden = (
                config.lstm_hidden
                if cell == "lstm"
                else hidden_for_budget(cell, budget, task, config.embedding_dim)
            )
            groups = [distances] if config.curriculum else [(d,) for d in distances]
            for group in groups:
                for seed in config.seeds:
                    jobs.append(Job(config, task_name, label, cell, forget_bias, hidden, group, seed, device))
    return sorted(jobs, key=lambda job: -job.cost())


def worker_count(config: ExperimentConfig, jobs: int, device: str) -> int:
    """Processes to train in: one per CPU core (or ``config.jobs``); one on a GPU."""
    return 1 if device != "cpu" else max(1, min(config.jobs or os.cpu_count() or 1, jobs))


def run_experiment(
    config: ExperimentConfig,
    device: str = "cpu",
    progress: Callable[[int, int, list[Result]], None] | None = None,
) -> Report:
    """Train every job of ``plan(config)`` and collect the results.

    ``progress(done, total, results)`` is called as each model finishes.
    """
    from charlstm.memory_probes import probe

    jobs = plan(config, device)
    report = Report(config, device)
    start = time.perf_counter()

    def collect(job: Job, outcome) -> None:
        results, weights = outcome
        report.results.extend(results)
        report.weights[(job.task, job.label, results[-1].distance, job.seed)] = weights
        if progress:
            progress(len(report.weights), len(jobs), results)

    workers = worker_count(config, len(jobs), device)
    if workers == 1:
        for job in jobs:
            collect(job, train_job(job))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no fork of a process that has torch threads
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_one_thread, job): job for job in jobs}
            for future in as_completed(futures):
                collect(futures[future], future.result())
    report.results.sort(
        key=lambda r: (
            TASKS.index(r.task),
            [v[0] for v in config.variants()].index(r.model),
            r.distance,
            r.seed,
        )
    )
    report.seconds = time.perf_counter() - start
    if not config.curriculum:
        probe(report)
    return report


def with_changes(config: ExperimentConfig, **changes) -> ExperimentConfig:
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
