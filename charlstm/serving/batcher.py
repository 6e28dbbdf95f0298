"""The continuous batcher: every running request is stepped together, one token per step.

One worker thread owns the models while the server runs (torch releases the GIL while it
computes, so the event loop stays free to read and write sockets). Requests arrive in a queue
(``submit``); at each step the worker

    1. admits waiting requests while fewer than ``max_batch`` run: reads each prompt on its own
       (as ``charlstm sample`` does: token by token, a long one through the fused layer) and appends its row to its model's
       batch (hidden state (layers, B, H), next-token logits (B, V));
    2. picks one token per row: the model's own log-probabilities for ``logprobs``, then the
       filters of ``charlstm.generation.sampling`` in ``next_tokens``' order, rows that share
       their settings filtered together; each sampled row draws from its own ``torch.Generator``,
       so a seeded request gives the same text whatever else shares the batch;
    3. runs the one-token stepper once over the whole batch;
    4. decodes each row's token, applies its stop strings, and hands the new text to the event
       loop (one ``call_soon_threadsafe`` per step for all rows);
    5. drops rows that ended (their length, a stop string, the time limit, or a client gone).

Greedy rows (temperature 0) take the argmax, as ``charlstm sample --temperature 0`` does. A row's
logits are the same equations whatever the batch size, but not always the same float sums: the
matrix product's kernels block the rows differently at some batch sizes (differences near 1e-7).
An argmax changes only if the two most likely tokens are that close.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from charlstm.generation.sampling import (
    apply_temperature,
    STEPPED_PRIME,
    min_p_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from charlstm.serving.errors import server_busy
from charlstm.serving.models import ServedModel
from charlstm.serving.requests import Limits, Sampling

log = logging.getLogger("charlstm.serve")


@dataclass(slots=True)
class Token:
    """One token of choice ``index``: the text it released (may be empty while a stop string
    is undecided), the token itself, and what was asked for with it."""

    index: int
    text: str
    token: str
    logprob: float | None = None
    top: dict[str, float] | None = None
    activation: float | None = None


@dataclass(slots=True)
class Finished:
    index: int
    reason: str  # "stop", "length", "time_limit", or "error" (logged on the server)
    text: str  # text held back until now (a partial stop string that was not one)
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


class StopText:
    """A row's token bytes turned into text: incremental UTF-8, and the stop strings (text that
    may be the start of one is held back until it is ruled out; the stop string is not written)."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""
        self.done = False

    def feed(self, data: bytes) -> str:
        text = self.pending + self.decoder.decode(data)
        self.pending = ""
        if not self.stops:
            return text
        found = [at for at in (text.find(stop) for stop in self.stops) if at != -1]
        if found:
            self.done = True
            return text[: min(found)]
        keep = max(_prefix_suffix(text, stop) for stop in self.stops)
        if keep:
            text, self.pending = text[:-keep], text[-keep:]
        return text

    def finish(self) -> str:
        if self.done:
            return ""
        text, self.pending = self.pending + self.decoder.decode(b"", final=True), ""
        return text


def _prefix_suffix(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that begins ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


@dataclass(eq=False)
class _Row:
    choice: Choice
    generator: torch.Generator
    text: StopText
    deadline: float
    history: torch.Tensor | None  # (window,) the last ids, for the repetition penalty
    tokens: int = 0


@dataclass(eq=False)
class _Batch:
    model: ServedModel
    rows: list[_Row] = field(default_factory=list)
    hidden: tuple[torch.Tensor, ...] | None = None  # (layers, B, H) each
    logits: torch.Tensor | None = None  # (B, V): each row's next token


@dataclass(eq=False)
class _Job:
    """Other work for the worker thread (scoring), run between steps."""

    function: Callable[[], object]
    future: asyncio.Future


# Events go to the event loop at most this often while generations run (every step's events
# otherwise): each hand-over wakes every stream's writer, and with many streams those wake-ups,
# not the model, set the pace. The cost is at most this much latency per piece of text.
FLUSH_SECONDS = 0.005


def read_prompt(model: ServedModel, ids: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Read ``ids`` (T, 1) from a zero state: the last logits (1, V) and the state after them.
    Up to ``STEPPED_PRIME`` tokens go through the stepper one at a time, longer prompts through
    the fused layer at once, as ``charlstm sample`` reads its prime."""
    hidden = model.module.init_hidden(ids.size(1))
    if len(ids) > STEPPED_PRIME:
        logits, hidden = model.module(ids, hidden)  # (T, 1, V)
        return logits[-1], hidden
    for token in ids:  # (1,)
        logits, hidden = model.stepper(token, hidden)  # (1, V)
    return logits, hidden


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
        self._batches: dict[str, _Batch] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: list[tuple[Callable, Token | Finished]] = []
        self._flushed = 0.0  # perf_counter of the last hand-over to the event loop

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
                for item in admitted:
                    if isinstance(item, _Job):
                        self._run_job(item)
                        continue
                    try:
                        self._admit(item)
                    except Exception:
                        log.exception("reading a prompt failed")
                        self._end(item, "error", "", 0)
                        self._release(1)
                for batch in self._batches.values():
                    if batch.rows:
                        try:
                            self._step(batch)
                        except Exception:
                            log.exception("a generation step failed")
                            self._fail(batch)
                busy = any(batch.rows for batch in self._batches.values())
                if not busy or time.perf_counter() - self._flushed >= FLUSH_SECONDS:
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
        loop = self._loop

        def settle() -> None:
            if job.future.done():
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)

        loop.call_soon_threadsafe(settle)

    def _admit(self, choice: Choice) -> None:
        model, sampling = choice.model, choice.sampling
        if sampling.max_tokens == 0:
            self._end(choice, "length", "", 0)
            self._release(1)
            return
        ids = torch.tensor(choice.prompt_ids, dtype=torch.long, device=model.device).unsqueeze(1)  # (T, 1)
        logits, hidden = read_prompt(model, ids)  # (1, V), (layers, 1, H)
        generator = torch.Generator(device=model.device)
        generator.manual_seed(choice.seed)
        history = None
        if sampling.repetition_penalty != 1.0:
            # As ``Generation``: a ring of the last ``window`` ids, the spare slots repeating the oldest.
            recent = torch.tensor(choice.prompt_ids[-sampling.repetition_window :], dtype=torch.long, device=model.device)
            spare = sampling.repetition_window - len(recent)
            history = torch.cat([recent[:1].expand(spare), recent])  # (window,)
        row = _Row(choice, generator, StopText(sampling.stop), time.perf_counter() + self.limits.time_limit, history)
        batch = self._batches.setdefault(model.name, _Batch(model))
        batch.rows.append(row)
        if batch.hidden is None:
            batch.hidden, batch.logits = hidden, logits
        else:
            batch.hidden = tuple(torch.cat([old, new], dim=1) for old, new in zip(batch.hidden, hidden))
            batch.logits = torch.cat([batch.logits, logits])

    def _step(self, batch: _Batch) -> None:
        started = time.perf_counter()
        model, rows = batch.model, batch.rows
        logits = batch.logits.float()  # (B, V)
        want_logprobs = [row.choice.sampling.logprobs for row in rows]
        logprobs = logits.log_softmax(dim=-1) if any(k is not None for k in want_logprobs) else None  # (B, V)
        unk = getattr(model.tokenizer, "unk_id", None)
        if unk is not None:
            logits[:, unk] = float("-inf")  # never write the unknown symbol
        tok = self._choose(logits, rows)  # (B,)

        chosen = top_values = top_ids = None
        if logprobs is not None:
            chosen = logprobs.gather(1, tok.unsqueeze(1)).squeeze(1).tolist()  # (B,)
            k = max((k for k in want_logprobs if k), default=0)
            if k:
                values, ids = logprobs.topk(min(k, logprobs.size(1)), dim=-1)  # (B, k)
                top_values, top_ids = values.tolist(), ids.tolist()

        batch.logits, batch.hidden = model.stepper(tok, batch.hidden)  # (B, V), (layers, B, H)
        now = time.perf_counter()
        tokens = tok.tolist()
        state = batch.hidden[1] if model.config.cell == "lstm" else batch.hidden[0]  # (layers, B, H)

        keep: list[int] = []
        for i, (row, t) in enumerate(zip(rows, tokens)):
            choice, sampling = row.choice, row.choice.sampling
            if choice.cancelled:
                continue
            row.tokens += 1
            if row.tokens == 1 and self.metrics is not None:
                self.metrics.first_token(now - choice.submitted)
            if row.history is not None:
                row.history = torch.cat([row.history[1:], tok[i : i + 1]])
            event = Token(choice.index, row.text.feed(model.token_bytes[t]), model.token_text[t])
            if sampling.logprobs is not None:
                event.logprob = chosen[i]
                if sampling.logprobs:
                    event.top = {
                        model.token_text[j]: v
                        for j, v in zip(top_ids[i][: sampling.logprobs], top_values[i][: sampling.logprobs])
                    }
            if sampling.activation is not None:
                layer, unit = sampling.activation
                event.activation = float(state[layer, i, unit])
            self._outbox.append((choice.deliver, event))
            if row.text.done:
                self._end(choice, "stop", "", row.tokens)
            elif row.tokens >= sampling.max_tokens:
                self._end(choice, "length", row.text.finish(), row.tokens)
            elif now > row.deadline:
                self._end(choice, "time_limit", row.text.finish(), row.tokens)
            else:
                keep.append(i)
        if len(keep) < len(rows):
            self._release(len(rows) - len(keep))
            batch.rows = [rows[i] for i in keep]
            if keep:
                index = torch.tensor(keep, device=tok.device)
                batch.hidden = tuple(h.index_select(1, index) for h in batch.hidden)
                batch.logits = batch.logits.index_select(0, index)
            else:
                batch.hidden = batch.logits = None
        if self.metrics is not None:
            self.metrics.step(time.perf_counter() - started, len(rows), model.name)

    def _choose(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """One token per row (B,), each by its own settings, in ``next_tokens``' order."""
        tok = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        groups: dict[tuple, list[int]] = {}
        for i, row in enumerate(rows):
            s = row.choice.sampling
            if s.repetition_penalty != 1.0:
                logits[i : i + 1] = repetition_penalty(logits[i : i + 1], row.history.unsqueeze(0), s.repetition_penalty)
            groups.setdefault((s.temperature, s.top_k, s.top_p, s.min_p), []).append(i)
        for (temperature, top_k, top_p, min_p), members in groups.items():
            index = torch.tensor(members, device=logits.device)
            group = logits.index_select(0, index) if len(members) < len(rows) else logits  # (G, V)
            if temperature == 0:
                tok.index_copy_(0, index, group.argmax(dim=-1))
                continue
            greedy = group.argmax(dim=-1)  # (G,): for a temperature so small that it overflows
            group = apply_temperature(group, temperature)
            if top_k is not None:
                group = top_k_filter(group, top_k)
            if top_p is not None:
                group = top_p_filter(group, top_p)
            if min_p is not None:
                group = min_p_filter(group, min_p)
            probs = group.softmax(dim=-1)  # (G, V)
            finite = torch.isfinite(probs).all(dim=-1)  # (G,): False where logits / temperature overflowed
            # What torch.multinomial(probs[j], 1, generator) draws, for all rows in one argmax:
            # argmax(probs / q) with q ~ Exp(1) from each row's own generator (the same numbers
            # multinomial would take from it, so a seeded request writes the same text).
            noise = torch.empty_like(probs)  # (G, V)
            for j, i in enumerate(members):
                noise[j].exponential_(generator=rows[i].generator)
            drawn = probs.div_(noise).argmax(dim=-1)  # (G,)
            tok.index_copy_(0, index, torch.where(finite, drawn, greedy))  # overflowed: the limit is greedy
        return tok

    def _fail(self, batch: _Batch) -> None:
        """A step failed (a bug, or the device ran out of memory): its rows end with "error"."""
        for row in batch.rows:
            self._end(row.choice, "error", "", row.tokens)
        self._release(len(batch.rows))
        batch.rows, batch.hidden, batch.logits = [], None, None

    def _end(self, choice: Choice, reason: str, text: str, tokens: int) -> None:
        self._outbox.append((choice.deliver, Finished(choice.index, reason, text, len(choice.prompt_ids), tokens)))

    def _release(self, count: int) -> None:
        with self._lock:
            self._running -= count
        self._report_depth()

    def _flush(self) -> None:
        self._flushed = time.perf_counter()
        if not self._outbox:
            return
        events, self._outbox = self._outbox, []

        def deliver() -> None:
            for function, event in events:
                function(event)

        self._loop.call_soon_threadsafe(deliver)

    def _finish_all(self) -> None:
        """At stop: whatever still runs or waits ends now ("time_limit": the server ran out of it)."""
        for batch in self._batches.values():
            for row in batch.rows:
                if not row.choice.cancelled:
                    self._end(row.choice, "time_limit", row.text.finish(), row.tokens)
            batch.rows = []
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
