"""The long-range experiment: how far back can an LSTM, a GRU and a tanh RNN remember?

For every task (``memory_tasks``), cell, distance and seed, a fresh one-layer model with the same
parameter count is trained on fresh random batches until it *solves* the task (held-out accuracy
≥ ``solved_at``, checked every ``eval_every`` steps) or until ``2 × budget`` steps. A model counts
as solved within the budget when it got there in ``budget`` steps. The doubling check: the models
that solved only in the second half, and the unsolved ones whose accuracy still rose in it, are
the outcomes that doubling the budget changed; when there are none, the budget was large enough.

With ``curriculum``, one model per (task, cell, seed) climbs the distances in order instead,
moving on when it solves one (each stage with up to ``2 × budget`` steps) and stopping at the
first it cannot solve.

Every cell sees the same training batches for a (task, distance, seed). Jobs run in parallel, one
process per CPU core with one thread each (tiny models use one core best), or one after another
on a GPU. ``memory_probes`` then looks inside the models that learnt.
"""

from __future__ import annotations

import os
import statistics
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from charlstm.analysis.config import MEMORY_TASKS, ExperimentConfig
from charlstm.analysis.memory_probes import probe
from charlstm.analysis.memory_tasks import MemoryModel, MemoryTask, accuracy, count_parameters, hidden_for_budget

RISE = 0.1  # an unsolved model whose accuracy rose more than this in the second half was still learning


@dataclass
class Result:
    task: str
    model: str  # the variant: "LSTM", "LSTM, forget bias 3", "GRU", "RNN"
    cell: str
    distance: int
    seed: int
    hidden_size: int
    parameters: int
    steps: int | None  # steps until held-out accuracy reached solved_at; None: not within 2 × budget
    accuracy_at_budget: float  # held-out accuracy after `budget` steps (or when solved before)
    accuracy: float  # final held-out accuracy, on fresh held-out sequences
    seconds: float

    def solved(self, within: int) -> bool:
        return self.steps is not None and self.steps <= within


@dataclass
class Job:
    """One model's training: a single distance, or a curriculum's distances in order."""

    config: ExperimentConfig
    task: str
    model: str
    cell: str
    forget_bias: float | None
    hidden_size: int
    distances: tuple[int, ...]
    seed: int
    device: str = "cpu"

    def cost(self) -> int:
        return sum(self.distances)


def _data_key(job: Job) -> list[int]:
    return [MEMORY_TASKS.index(job.task), job.distances[0], job.seed]


def data_generator(job: Job) -> torch.Generator:
    """The generator of a job's training batches: the same for every cell at a (task, distance,
    seed), so cells are compared on the same sequences."""
    return torch.Generator().manual_seed(zlib.crc32(repr(_data_key(job)).encode()))


def train_job(job: Job) -> tuple[list[Result], dict[str, torch.Tensor]]:
    """Train one model through its distances; its results (one per distance reached) and weights."""
    config, task = job.config, MemoryTask(job.task)
    torch.manual_seed(zlib.crc32(repr([job.model, *_data_key(job)]).encode()))  # the initial weights
    generator = data_generator(job)
    model = MemoryModel(job.cell, task, config.embedding_dim, job.hidden_size, job.forget_bias).to(job.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    parameters = sum(p.numel() for p in model.parameters())
    results = []
    for distance in job.distances:
        start, steps, at_budget = time.perf_counter(), None, None
        held_out = 1_000_000 + distance  # the same held-out sequences for every model at this distance
        if results and accuracy(model, task, distance, config.eval_sequences, held_out) >= config.solved_at:
            steps = 0  # a curriculum's model that already solves the next distance, untaught
        for step in range(1, 2 * config.budget + 1 if steps is None else 0):
            ids, target = task.batch(distance, config.batch_size, generator)
            logits = model(ids.to(job.device))
            loss = F.cross_entropy(logits.flatten(0, 1), target.to(job.device).flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if step % config.eval_every == 0 or step in (config.budget, 2 * config.budget):
                score = accuracy(model, task, distance, config.eval_sequences, held_out)
                if step == config.budget:
                    at_budget = score
                if score >= config.solved_at:
                    steps = step
                    break
        final = accuracy(model, task, distance, 4 * config.eval_sequences, held_out + 500_000)
        at_budget = final if at_budget is None else at_budget
        results.append(
            Result(
                job.task,
                job.model,
                job.cell,
                distance,
                job.seed,
                job.hidden_size,
                parameters,
                steps,
                at_budget,
                final,
                time.perf_counter() - start,
            )
        )
        if steps is None:
            break  # a curriculum stops at the first distance it cannot solve
    return results, {name: tensor.cpu() for name, tensor in model.state_dict().items()}


def _one_thread(job: Job):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic in a worker and in one process
    try:
        return train_job(job)
    finally:
        torch.set_num_threads(threads)


@dataclass
class Report:
    config: ExperimentConfig
    device: str = "cpu"
    results: list[Result] = field(default_factory=list)
    weights: dict[tuple[str, str, int, int], dict[str, torch.Tensor]] = field(
        default_factory=dict, repr=False
    )
    seconds: float = 0.0
    # filled by memory_probes: model -> {"trained_at": d, "norms": [(k, mean ||dloss/dh_{T-k}||)]}
    gradients: dict[str, dict] = field(default_factory=dict)
    forget_gates: dict = field(default_factory=dict)

    def runs(self, task: str, model: str, distance: int) -> list[Result]:
        return [r for r in self.results if (r.task, r.model, r.distance) == (task, model, distance)]

    def summary(self, task: str, model: str, distance: int, within: int | None = None) -> dict:
        """Over seeds: how many solved within ``within`` steps (default 2 × budget), the median and
        range of the steps it took (over those that solved) and of the final accuracy."""
        runs = self.runs(task, model, distance)
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
        """The models that solved only after ``budget`` steps: outcomes doubling changed."""
        return [r for r in self.results if r.steps is not None and r.steps > self.config.budget]

    def still_learning(self) -> list[Result]:
        """Unsolved models whose held-out accuracy rose by more than ``RISE`` between ``budget``
        and ``2 × budget`` steps: not solved, but more steps might change that."""
        return [r for r in self.results if r.steps is None and r.accuracy - r.accuracy_at_budget > RISE]

    def longest_solved(self, task: str, model: str) -> int | None:
        """The longest distance where at least one seed solved ``task``."""
        solved = (
            r.distance for r in self.results if (r.task, r.model) == (task, model) and r.steps is not None
        )
        return max(solved, default=None)

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "device": self.device,
            "seconds": self.seconds,
            "results": [asdict(r) for r in self.results],
            "needed_the_doubling": [asdict(r) for r in self.needed_the_doubling()],
            "still_learning": [asdict(r) for r in self.still_learning()],
            "gradients": self.gradients,
            "forget_gates": self.forget_gates,
        }


def plan(config: ExperimentConfig, device: str) -> list[Job]:
    """Every model to train, the longest first (so parallel workers finish together)."""
    jobs = []
    for task_name in config.tasks:
        task = MemoryTask(task_name)
        parameters = count_parameters("lstm", config.hidden_size, task, config.embedding_dim)
        for model, cell, forget_bias in config.variants():
            hidden = (
                config.hidden_size
                if cell == "lstm"
                else hidden_for_budget(cell, parameters, task, config.embedding_dim)
            )
            groups = [config.distances] if config.curriculum else [(d,) for d in config.distances]
            for group in groups:
                for seed in range(config.seeds):
                    jobs.append(Job(config, task_name, model, cell, forget_bias, hidden, group, seed, device))
    return sorted(jobs, key=lambda job: -job.cost())


def worker_count(config: ExperimentConfig, jobs: int, device: str) -> int:
    """Processes to train in: one per CPU core this process may use (or ``config.jobs``); one on
    a GPU."""
    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(config.jobs or cores, jobs))


def run_experiment(
    config: ExperimentConfig,
    device: str = "cpu",
    progress: Callable[[int, int, list[Result]], None] | None = None,
) -> Report:
    """Train every job of ``plan(config)``, collect the results, then probe the models that learnt.

    ``progress(done, total, results)`` is called as each model finishes.
    """
    jobs = plan(config, device)
    report = Report(config, device)
    start = time.perf_counter()

    def collect(job: Job, outcome) -> None:
        results, weights = outcome
        report.results.extend(results)
        report.weights[(job.task, job.model, results[-1].distance, job.seed)] = weights
        if progress:
            progress(len(report.weights), len(jobs), results)

    workers = worker_count(config, len(jobs), device)
    if workers == 1:
        for job in jobs:
            collect(job, _one_thread(job) if device == "cpu" else train_job(job))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no fork of a process that has torch threads
        pool = ProcessPoolExecutor(workers, mp_context=context)
        try:
            futures = {pool.submit(_one_thread, job): job for job in jobs}
            for future in as_completed(futures):
                collect(futures[future], future.result())
        except BaseException:  # Ctrl-C: drop the queued jobs rather than finish them first
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    models = [v[0] for v in config.variants()]
    report.results.sort(key=lambda r: (MEMORY_TASKS.index(r.task), models.index(r.model), r.distance, r.seed))
    report.seconds = time.perf_counter() - start
    probe(report)
    return report
