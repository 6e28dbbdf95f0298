"""The generation engine: every token charlstm writes is drawn here.

A ``Request`` is one or more rows that start from one prompt with one set of settings (a
``SampleConfig``) and one seed: ``charlstm sample --num-samples N`` is one request of N rows, a
chat turn one row that starts from the session's state, a served completion one request per
choice. The engine steps every row of every live request as one batch:

    1. the neural cache (requests that have one) mixes into each row's next-token logits
    2. one token per row: the filter chain of ``generation.filters`` with each row's own
       settings, in one pass for the whole batch (``generation.choose``); each request draws
       its noise from its own generator, so a seeded request writes the same text alone or
       beside any others
    3. the one-token stepper reads every row's token (``stepper.TokenStepper``)
    4. each row's new text: one lookup per token for a char vocabulary without stop strings,
       else its ``TextStream`` (UTF-8, stop strings, a length in characters)

Requests join (their prompt read on its own first) and leave (finished or cancelled) between
steps; the batch's tensors are rebuilt only then. The rows of one request join and leave
together: a row that finishes before the others keeps its state from that moment, and the
tokens the batch goes on drawing for it leave no trace.
"""

from __future__ import annotations

import torch

from charlstm.cells import Hidden
from charlstm.stepper import StepState, TokenStepper
from charlstm.generation.book import LogprobBook
from charlstm.generation.cache import GenerationCache
from charlstm.generation.choose import Chooser, Histories
from charlstm.generation.request import (  # noqa: F401 (re-exported: the engine's vocabulary)
    STEPPED_PRIME,
    Request,
    check_config,
    prepare,
    read_prime,
)
from charlstm.generation.text import single_chars


class Engine:
    """Steps the rows of every request added to it, as one batch, through ``model``'s stepper
    (``stepper``: one to reuse, else built for ``weights``; a plain call ``stepper(ids, hidden)
    -> (logits, hidden)`` works too). Inference only: call it under ``torch.inference_mode()``."""

    def __init__(self, model, tokenizer, device, *, weights: str = "fp32", stepper=None):
        model.eval()
        self.model, self.tokenizer, self.device = model, tokenizer, device
        if stepper is None:
            stepper = TokenStepper(model, weights)
        elif not hasattr(stepper, "step_"):
            stepper = _CallStepper(stepper, TokenStepper(model, weights))
        self.stepper = stepper
        self.token_bytes = tokenizer.token_bytes()
        self.table = single_chars(tokenizer)
        self.requests: list[Request] = []  # in batch order
        self._joining: list[tuple[Request, Hidden, torch.Tensor]] = []
        self._changed = False
        self.state: StepState | None = None
        self.book: LogprobBook | None = None
        self.histories: Histories | None = None
        self._rows: dict[Request, slice] = {}
        self.ids: list[int] = []  # the last step's tokens, in batch order
        self.steps = 0
        self._ends: dict[int, list[Request]] = {}  # step -> the plain requests whose length ends there

    def add(self, *requests: Request) -> None:
        """Read the requests' prompts now; their rows join the batch at the next step. Prompts of
        one length, without a start state or cache, are read together as one batch."""
        together: dict[int, list[Request]] = {}
        for request in requests:
            if request.hidden is not None and request.hidden[0].size(1) not in (1, request.rows):
                raise ValueError(f"the start state has {request.hidden[0].size(1)} rows; it needs 1 or {request.rows}")
            if request.cache is None and not request.config.cache_size and request.hidden is None:
                together.setdefault(len(request.prompt_ids), []).append(request)
            else:
                self._read([request])
        for group in together.values():
            self._read(group)

    def _read(self, requests: list[Request]) -> None:
        columns = [torch.tensor(r.prompt_ids, dtype=torch.long, device=self.device).unsqueeze(1).expand(-1, r.rows) for r in requests]
        ids = torch.cat(columns, dim=1)  # (T, rows of all)
        request = requests[0]
        state = self.stepper.state(request.hidden, ids.size(1))  # (layers, rows, H) each: a copy
        if len(requests) == 1:
            config = request.config
            if request.cache is None and config.cache_size:
                request.cache = GenerationCache(config.cache_config(), request.rows, self.model.config.hidden_size, self.device)
            if request.cache is not None:  # the prompt's states, before read_prime moves the state on
                start = None if request.hidden is None else tuple(t.clone() for t in state.hidden)
                request.cache.read(self.model, ids, start)
        logits = read_prime(self.model, self.stepper, ids, state)  # (rows, V)
        start = 0
        for request in requests:
            rows = slice(start, start + request.rows)
            start += request.rows
            prepare(request, logits.size(1), self.token_bytes, self.table, self.device)
            if request._limit == 0 or request.max_chars == 0:
                self._end(request, range(request.rows), "length")
                continue
            self._joining.append((request, tuple(t[:, rows] for t in state.hidden), logits[rows]))

    def cancel(self, request: Request) -> None:
        """Drop ``request`` at the next step (its rows end as they are)."""
        request.finished = True
        self._changed = True

    def hidden_of(self, request: Request) -> Hidden | None:
        """Each row's state (layers, rows, H) after its last token read, as copies (None before
        the request has run a step)."""
        rows = self._rows.get(request)
        if rows is None and len(request.ended) < request.rows:
            return None
        parts = [
            request.ended[row][0] if row in request.ended else tuple(t[:, rows.start + row : rows.start + row + 1] for t in self.state.hidden)
            for row in range(request.rows)
        ]
        return tuple(torch.cat([p[i] for p in parts], dim=1) for i in range(len(parts[0])))

    def logits_of(self, request: Request) -> torch.Tensor | None:
        """Each row's next-token logits (rows, V) after its last token read, as a copy."""
        rows = self._rows.get(request)
        if rows is None and len(request.ended) < request.rows:
            return None
        return torch.stack(
            [request.ended[row][1] if row in request.ended else self.book.current[rows.start + row] for row in range(request.rows)]
        )

    def logprob_of(self, request: Request) -> tuple[list[float], list[int]]:
        """Per row, the sum of the log-probabilities of the tokens it drew so far, and their count."""
        sums, counts = list(request.logprob), list(request.counted)
        rows = self._rows.get(request)
        if rows is not None:
            live_sums, live_counts = self.book.totals()
            for row in range(request.rows):
                sums[row] += live_sums[rows.start + row]
                counts[row] += live_counts[rows.start + row]
        return sums, counts

    # ------------------------------------------------------------------------------ stepping

    def step(self) -> list[Request]:
        """One token for every row; the requests that finished at this step."""
        if self._joining or self._changed:
            self._rebuild()
        if not self.requests:
            return []
        book, state = self.book, self.state
        logits = book.current  # (B, V)
        features = state.layers[-1][0]  # (B, H): the last layer's state, a view updated in place
        for request, rows in self._cached:
            request.cache.mix_(logits[rows], features[rows])  # in place: a view of the batch's logits
        for request, rows in self._recorded:
            self._record(request, logits[rows])
        tok = self.chooser(logits, None if self.histories is None else self.histories.ids, book.next_slot())  # (B,)
        for request, rows in self._cached:
            request.cache.remember(features[rows], tok[rows])
        ids = tok.tolist()
        if self.histories is not None:
            self.histories.add(tok)
        for request, rows in self._blocked:
            request._blocker.update(ids[rows])
        skipped = self._skipped + self._follow(ids) if self._constrained else self._skipped
        book.drawn(skipped or None)
        self.stepper.step_(tok, state, out=book.next_logits(), token=ids[0] if len(ids) == 1 else None)
        if self._activations:
            hidden = state.hidden[1] if len(state.hidden) == 2 else state.hidden[0]  # the LSTM's cell, else h
            for request, rows in self._activations:
                layer, unit = request.activation
                request.activations = hidden[layer, rows, unit].tolist()
        self.ids, self.steps = ids, self.steps + 1
        for request, rows in self._recorded:
            chosen = request._step_logprobs.gather(1, tok[rows].unsqueeze(1))  # (rows, 1)
            request.token_logprobs = chosen.squeeze(1).tolist()
        # A plain request (one character a token, nothing per token asked) costs nothing here
        # until the step its length ends it; ``pieces_of`` gives its text when asked.
        finished = []
        for request in self._ends.pop(self.steps, ()):
            if not request.finished:
                request.count = request._limit
                self._end(request, range(request.rows), "length")
                finished.append(request)
        for request, rows in self._followed:
            request.count += 1
            request.tokens = mine = ids[rows]
            if request._streams is None:
                request.pieces = [self.table[t] for t in mine]
                if request.count >= request._limit:
                    self._end(request, range(request.rows), "length")
            else:
                self._feed(request, mine, rows)
            if request.finished:
                finished.append(request)
        self._changed = self._changed or bool(finished)
        return finished

    def count_of(self, request: Request) -> int:
        """Tokens each row of ``request`` has drawn so far."""
        return request.count if request._followed or request.finished else self.steps - request._joined

    def pieces_of(self, request: Request) -> list[str]:
        """The new text of each row of ``request`` at the last step."""
        if request._followed:
            return request.pieces
        start = self._rows[request].start
        return [self.table[t] for t in self.ids[start : start + request.rows]]

    def _follow(self, ids: list[int]) -> list[int]:
        """Move each constrained row's pattern on by its token; a row whose token the pattern does
        not allow (where its text matches already) ends before it: its state is kept as it is,
        and the token neither counts nor is read into it. The rows that ended so."""
        ended = []
        for request, rows in self._constrained:
            constraint, reasons = request._constraint, request.reasons
            for row in range(request.rows):
                if reasons[row] is None and not constraint.advance(row, ids[rows.start + row]):
                    reasons[row] = "stop"
                    self._keep(request, [row], rows)
                    ended.append(rows.start + row)
                    self._changed = self._changed or request.rows > 1
        return ended

    def _feed(self, request: Request, ids: list[int], rows: slice) -> None:
        """Each running row's token through its ``TextStream``; rows that end are noted."""
        pieces, ended, reasons = [], [], request.reasons
        for row, (stream, t) in enumerate(zip(request._streams, ids)):
            if reasons[row] is not None:
                pieces.append("")
                continue
            pieces.append(stream.feed(self.token_bytes[t]))
            if stream.done:
                ended.append(row)
                reasons[row] = "stop" if stream.stopped else "length"
            elif request._constraint is not None and request._constraint.complete(row):
                pieces[-1] += stream.finish()  # the text matches and nothing may follow
                ended.append(row)
                reasons[row] = "stop"
        if request.count >= request.max_tokens:
            for row, stream in enumerate(request._streams):
                if reasons[row] is None:
                    pieces[row] += stream.finish()
                    ended.append(row)
                    reasons[row] = "length"
        request.pieces = pieces
        if ended:
            self._keep(request, ended, rows)
            self._changed = self._changed or request.rows > 1  # the rows that ended stop counting in the book
        if all(reasons):
            request.finished = True

    def _keep(self, request: Request, ended, rows: slice) -> None:
        """The state and logits of ``ended`` rows, as they are now (after their last token)."""
        start = rows.start
        for row in ended:
            at = start + row
            request.ended[row] = (tuple(t[:, at : at + 1].clone() for t in self.state.hidden), self.book.current[at].clone())

    def _end(self, request: Request, rows, reason: str) -> None:
        for row in rows:
            if request.reasons[row] is None:
                request.reasons[row] = reason
        request.finished = True
        if request in self._rows:
            self._keep(request, [r for r in rows if r not in request.ended], self._rows[request])

    def _record(self, request: Request, logits: torch.Tensor) -> None:
        """The per-token log-probabilities ``request`` asked for, from ``logits`` (rows, V)."""
        logprobs = logits.float().log_softmax(dim=-1)  # (rows, V): the model's own, before any filter
        request._step_logprobs = logprobs
        if request.logprobs:
            values, ids = logprobs.topk(min(request.logprobs, logprobs.size(1)), dim=-1)  # (rows, k)
            request.top_logprobs = [list(zip(i, v)) for i, v in zip(ids.tolist(), values.tolist())]

    # ---------------------------------------------------------------------------- composing

    def _rebuild(self) -> None:
        """Lay the batch out again: finished requests leave, joining ones come in."""
        old = self.requests
        if self.book is not None:
            sums, counts = self.book.totals()
            for request in old:
                for row, at in enumerate(range(*self._rows[request].indices(len(sums)))):
                    request.logprob[row] += sums[at]
                    request.counted[row] += counts[at]
        if self.histories is not None:
            for request, ring in zip(old, self.histories.parts()):
                request._ring = ring
        kept = [r for r in old if not r.finished]
        joining = [(r, s, lg) for r, s, lg in self._joining if not r.finished]
        self._joining, self._changed = [], False
        self.requests = kept + [r for r, _, _ in joining]
        for request, _, _ in joining:
            request._joined = self.steps  # its first token comes at the next step
            if not request._followed:
                self._ends.setdefault(self.steps + request._limit, []).append(request)
        if not self.requests:
            self.state = self.book = None
            self._rows = {}
            return
        hidden_parts, logit_parts = [], []
        if kept:
            index = torch.cat([torch.arange(self._rows[r].start, self._rows[r].stop) for r in kept]).to(self.device)
            hidden_parts.append(tuple(t.index_select(1, index) for t in self.state.hidden))
            logit_parts.append(self.book.current.index_select(0, index))
        for _, hidden, logits in joining:
            hidden_parts.append(hidden)
            logit_parts.append(logits)
        hidden = tuple(torch.cat([p[i] for p in hidden_parts], dim=1) for i in range(len(hidden_parts[0])))
        self.state = self.stepper.state(hidden)
        self.book = LogprobBook(sum(r.rows for r in self.requests))
        self.book.start(torch.cat(logit_parts))
        self._lay_out()

    def _lay_out(self) -> None:
        """Each request's rows in the batch, and what each step must do for whom."""
        self._rows, start = {}, 0
        for request in self.requests:
            self._rows[request] = slice(start, start + request.rows)
            start += request.rows
        spans = [(r, self._rows[r]) for r in self.requests]
        self._followed = [(r, s) for r, s in spans if r._followed]
        self._cached = [(r, s) for r, s in spans if r.cache is not None]
        self._blocked = [(r, s) for r, s in spans if r._blocker is not None]
        self._recorded = [(r, s) for r, s in spans if r.logprobs is not None]
        self._activations = [(r, s) for r, s in spans if r.activation is not None]
        self._constrained = [(r, s) for r, s in spans if r._constraint is not None]
        self._skipped = [self._rows[r].start + row for r in self.requests for row in r.ended]
        parts = [(r.config, r.rows, r._noise, r._blocker, r._bias, r._constraint) for r in self.requests]
        self.chooser = Chooser(parts, self.book.current.size(1), self.tokenizer.unk_id, self.device)
        penalised = any(r.config.repetition_penalty != 1.0 for r in self.requests)
        self.histories = Histories([r._ring for r in self.requests], self.device) if penalised else None


class _CallStepper:
    """A stepper given as a plain call ``stepper(ids, hidden) -> (logits, hidden)`` (a wrapped
    one, as the server's tests slow it down), with the in-place interface the engine uses."""

    def __init__(self, call, inner: TokenStepper):
        self.call, self.inner = call, inner

    def state(self, hidden: Hidden | None, batch_size: int | None = None) -> StepState:
        return self.inner.state(hidden, batch_size)

    def step_(self, ids: torch.Tensor, state: StepState, out: torch.Tensor | None = None, token=None) -> torch.Tensor:
        logits, hidden = self.call(ids, state.hidden)
        for mine, new in zip(state.hidden, hidden):
            mine.copy_(new)
        return (state.logits if out is None else out).copy_(logits)
