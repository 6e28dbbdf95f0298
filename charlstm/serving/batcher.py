"""The continuous batcher: admits requests to the generation engine and delivers what it writes.

One worker thread owns the models while the server runs (torch releases the GIL while it
computes, so the event loop stays free to read and write sockets). Requests arrive in a queue
(``submit``); at each step the worker

    1. admits waiting choices while fewer than ``max_batch`` run: each becomes a ``Request`` of
       its model's ``generation.engine.Engine`` (one row, its own seed: the text ``charlstm
       sample --seed`` writes), which reads its prompt;
    2. steps each model's engine once: one token for every running row, drawn by the row's own
       settings, as every other driver of the engine draws it;
    3. collects each row's text (and the per-token records a request asked for), drops rows
       that ended (their length, a stop string, the time limit, or a client gone), and hands
       the events to the event loop at most every ``FLUSH_SECONDS`` (one ``call_soon_threadsafe``
       for all rows; a row's plain text is one event per hand-over, however many tokens).

A row's logits are the same equations whatever the batch size, but not always the same float
sums: the matrix product's kernels block the rows differently at some batch sizes (differences
near 1e-7). A draw changes only if it falls that close to a boundary between two tokens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from charlstm.generation.engine import Engine, Request
from charlstm.generation.text import TextStream
from charlstm.serving.errors import server_busy
from charlstm.serving.models import ServedModel
from charlstm.serving.requests import Limits, Sampling

log = logging.getLogger("charlstm.serve")


def StopText(stops: tuple[str, ...]) -> TextStream:  # noqa: N802 (the name the server once had)
    """A row's text stream with stop strings and no length limit."""
    return TextStream(None, stops)


@dataclass(slots=True)
class Token:
    """Text of choice ``index`` (may be empty while a stop string is undecided). With per-token
    records (``logprobs``, ``activation``) one event per token: the token and what was asked."""

    index: int
    text: str
    token: str | None = None
    logprob: float | None = None
    top: dict[str, float] | None = None
    activation: float | None = None


@dataclass(slots=True)
class Finished:
    index: int
    reason: str  # "stop", "length", "time_limit", or "error" (logged on the server)
    text: str  # text not delivered until now
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class Choice:
    """One generation to run: ``deliver`` is called on the event loop with each ``Token`` and
    the final ``Finished``. Set ``cancelled`` (from any thread) to drop it at the next step."""

    model: ServedModel
    index: int
    prompt_ids: list[int]
    sampling: Sampling
    seed: int
    deliver: Callable[[Token | Finished], None]
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)


@dataclass(eq=False, slots=True)
class _Row:
    choice: Choice
    request: Request
    deadline: float
    records: bool  # per-token events (logprobs or activations)
    pending: str = ""  # plain text not handed over yet
    started: bool = False  # a first token written


@dataclass(eq=False)
class _Job:
    """Other work for the worker thread (scoring), run between steps."""

    function: Callable[[], object]
    future: asyncio.Future


# Events go to the event loop at most this often while generations run: each hand-over wakes every
# stream's writer, and with many streams those wake-ups, not the model, set the pace. The interval
# grows with the rows running (up to FLUSH_MAX_SECONDS at 64): that much latency per piece of text,
# for fewer, longer pieces. A row's first token is handed over at once.
FLUSH_SECONDS = 0.005
FLUSH_MAX_SECONDS = 0.02


def serving_threads() -> int:
    """Threads for the model's products while serving: all cores but one, which the HTTP side
    (event loop, sockets) needs. On two cores, a second compute thread that must wait for the
    event loop at every product's barrier costs more than it brings."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - 1)


class Batcher:
    """Runs ``Choice``s on a worker thread; ``start`` on the event loop, ``stop`` at the end.

    ``metrics`` (optional) gets ``first_token(seconds)``, ``step(seconds, tokens, model)`` and
    ``depth(waiting, running)`` calls."""

    def __init__(self, limits: Limits, metrics=None):
        self.limits = limits
        self.metrics = metrics
        self.accepting = True
        self._lock = threading.Condition()
        self._waiting: deque[Choice | _Job] = deque()
        self._running = 0
        self._stopping = False
        self._engines: dict[str, Engine] = {}
        self._rows: dict[str, list[_Row]] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Callable, Token | Finished]] = []
        self._flushed = 0.0  # perf_counter of the last hand-over to the event loop
        self._first = False  # a row wrote its first token since then

    # ------------------------------------------------------------------ the event loop's side

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="charlstm-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def waiting(self) -> int:
        """Choices queued for a place in the batch. Under the lock: the worker thread pops the
        queue while the event loop counts it (a count without the lock raised "deque mutated
        during iteration" under load, and that request got a 500)."""
        with self._lock:
            return sum(isinstance(item, Choice) for item in self._waiting)

    @property
    def running(self) -> int:
        return self._running

    def submit(self, choices: list[Choice]) -> None:
        """Queue ``choices`` (all of one request, all or none), or raise 503 when the queue is
        full or the server is shutting down."""
        with self._lock:
            if not self.accepting or self._stopping:
                raise server_busy("the server is shutting down", self.limits.retry_after)
            free = max(0, self.limits.max_batch - self._running)
            if self.waiting + len(choices) > self.limits.max_queue + free:
                raise server_busy(
                    f"the queue is full ({self.limits.max_queue} waiting); try again shortly",
                    self.limits.retry_after,
                )
            self._waiting.extend(choices)
            self._lock.notify_all()
        self._report_depth()

    async def call(self, function: Callable[[], object]):
        """Run ``function`` on the worker thread, between steps; its result."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if not self.accepting or self._stopping:
                raise server_busy("the server is shutting down", self.limits.retry_after)
            self._waiting.append(_Job(function, future))
            self._lock.notify_all()
        return await future

    # --------------------------------------------------------------------- the worker thread

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                admitted = self._take()
                if admitted is None:
                    break
                choices = []
                for item in admitted:
                    if isinstance(item, _Job):
                        self._run_job(item)
                    else:
                        choices.append(item)
                if choices:
                    self._admit(choices)
                for name, engine in list(self._engines.items()):
                    if self._rows[name]:
                        try:
                            self._step(name, engine)
                        except Exception:
                            log.exception("a generation step failed")
                            self._fail(name)
                rows = sum(len(r) for r in self._rows.values())
                interval = min(FLUSH_MAX_SECONDS, FLUSH_SECONDS * max(1, rows // 16))
                if not rows or self._first or time.perf_counter() - self._flushed >= interval:
                    self._flush()
        self._finish_all()

    def _take(self) -> list | None:
        """What to admit now; waits while nothing runs and nothing waits. None: stop."""
        with self._lock:
            while not self._stopping and not self._waiting and self._running == 0:
                self._lock.wait(timeout=1.0)
            if self._stopping:
                return None
            taken = []
            while self._waiting:
                item = self._waiting[0]
                if isinstance(item, Choice) and not item.cancelled and self._running >= self.limits.max_batch:
                    break
                self._waiting.popleft()
                if isinstance(item, Choice):
                    if item.cancelled:
                        continue
                    self._running += 1
                taken.append(item)
        if taken:
            self._report_depth()
        return taken

    def _run_job(self, job: _Job) -> None:
        try:
            result, error = job.function(), None
        except Exception as e:  # handed to the request that asked; it decides what the client sees
            result, error = None, e

        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        self._loop.call_soon_threadsafe(settle)

    def _engine(self, model: ServedModel) -> Engine:
        if model.name not in self._engines:
            self._engines[model.name] = Engine(model.module, model.tokenizer, model.device, weights=model.weights, stepper=model.stepper)
            self._rows[model.name] = []
        return self._engines[model.name]

    def _admit(self, choices: list[Choice]) -> None:
        """The choices' rows join their models' engines (prompts of one length read together)."""
        by_model: dict[str, list[_Row]] = {}
        for choice in choices:
            sampling = choice.sampling
            if sampling.max_tokens == 0:
                self._end(choice, "length", "", 0)
                self._release(1)
                continue
            request = Request(
                dataclasses.replace(sampling.config, seed=choice.seed), choice.prompt_ids, sampling.max_tokens,
                stops=sampling.stop, logprobs=sampling.logprobs, activation=sampling.activation,
            )
            records = sampling.logprobs is not None or sampling.activation is not None
            row = _Row(choice, request, time.perf_counter() + self.limits.time_limit, records)
            by_model.setdefault(choice.model.name, []).append(row)
        for rows in by_model.values():
            model = rows[0].choice.model
            try:
                self._engine(model).add(*(row.request for row in rows))
            except Exception:
                log.exception("reading a prompt failed")
                for row in rows:
                    self._end(row.choice, "error", "", 0)
                self._release(len(rows))
                continue
            self._rows[model.name].extend(rows)

    def _step(self, name: str, engine: Engine) -> None:
        started = time.perf_counter()
        rows = self._rows[name]
        engine.step()
        now = time.perf_counter()
        table, ids, at = engine.table, engine.ids, engine._rows
        keep: list[_Row] = []
        for row in rows:
            choice, request = row.choice, row.request
            if choice.cancelled:
                engine.cancel(request)
                continue
            if not row.started:
                row.started = self._first = True
                if self.metrics is not None:
                    self.metrics.first_token(now - choice.submitted)
            if row.records:
                self._outbox.append((choice.deliver, self._token(row)))
            elif request._followed:
                row.pending += request.pieces[0]
            else:  # one character a token: read off the step's tokens
                row.pending += table[ids[at[request].start]]
            if request.finished:
                reason, count = request.reasons[0], engine.count_of(request)
            elif now > row.deadline:  # one comparison a row: cheaper than keeping the soonest
                reason, count = "time_limit", engine.count_of(request)
                engine.cancel(request)
                row.pending += request.held_back()
            else:
                keep.append(row)
                continue
            self._end(choice, reason, row.pending, count)
        if len(keep) < len(rows):
            self._release(len(rows) - len(keep))
            self._rows[name] = keep
        if self.metrics is not None:
            self.metrics.step(time.perf_counter() - started, len(rows), name)

    def _token(self, row: _Row) -> Token:
        """The per-token event of a row that asked for per-token records."""
        request, model = row.request, row.choice.model
        event = Token(row.choice.index, row.pending + request.pieces[0], model.token_text[request.tokens[0]])
        row.pending = ""
        if request.logprobs is not None:
            event.logprob = request.token_logprobs[0]
            if request.logprobs:
                event.top = {model.token_text[i]: v for i, v in request.top_logprobs[0]}
        if request.activations is not None:
            event.activation = request.activations[0]
        return event

    def _fail(self, name: str) -> None:
        """A step failed (a bug, or the device ran out of memory): its rows end with "error"."""
        rows, engine = self._rows[name], self._engines[name]
        for row in rows:
            self._end(row.choice, "error", "", engine.count_of(row.request))
        self._release(len(rows))
        self._rows[name] = []
        del self._engines[name]

    def _end(self, choice: Choice, reason: str, text: str, tokens: int) -> None:
        self._outbox.append((choice.deliver, Finished(choice.index, reason, text, len(choice.prompt_ids), tokens)))

    def _release(self, count: int) -> None:
        with self._lock:
            self._running -= count
        self._report_depth()

    def _flush(self) -> None:
        self._flushed, self._first = time.perf_counter(), False
        for rows in self._rows.values():
            for row in rows:
                if row.pending and not row.records:
                    self._outbox.append((row.choice.deliver, Token(row.choice.index, row.pending)))
                    row.pending = ""
        if not self._outbox:
            return
        events, self._outbox = self._outbox, []

        def deliver() -> None:
            for function, event in events:
                function(event)

        self._loop.call_soon_threadsafe(deliver)

    def _finish_all(self) -> None:
        """At stop: whatever still runs or waits ends now ("time_limit": the server ran out of it)."""
        for name, rows in self._rows.items():
            for row in rows:
                if not row.choice.cancelled:
                    count = self._engines[name].count_of(row.request)
                    self._end(row.choice, "time_limit", row.pending + row.request.held_back(), count)
            rows.clear()
        with self._lock:
            waiting, self._waiting = list(self._waiting), deque()
            self._running = 0
        for item in waiting:
            if isinstance(item, Choice):
                self._end(item, "time_limit", "", 0)
        try:
            self._flush()
        except RuntimeError:
            pass  # the event loop has already closed: nobody is left to tell

    def _report_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.depth(self.waiting, self._running)
