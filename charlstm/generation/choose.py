"""One token for every row of a batch, each row by its own settings: the filter chain of
``generation.filters`` with one value per row, and the noise each request draws.

Rows that share nothing but the batch are filtered together: a setting becomes a (B, 1) tensor,
and a row without it gets the value that changes nothing (top-k of the whole vocabulary, top-p
of infinity, min-p of 0, a penalty of 1). Every operation works on each row on its own, so a row
gets the very numbers it would get alone. A filter no row uses costs nothing.

Sampling draws ``argmax(probs / q)`` with ``q ~ Exp(1)``: exactly what ``torch.multinomial``
draws for one sample per row (the Gumbel trick it uses itself), from each request's own
generator, ``NOISE_CHUNK`` steps of noise in one call where that draws the same numbers.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from charlstm.generation.filters import repetition_penalty

NOISE_CHUNK = 64
NOISE_BYTES = 1 << 24  # at most this much noise drawn ahead per request (large vocabularies)
# Dividing finite float32 logits by a temperature at least this large cannot overflow; below it,
# a row whose distribution overflowed takes its most likely token (the limit of T -> 0).
SAFE_TEMPERATURE = 1e-4
_CHUNKED_DRAWS: dict[tuple, bool] = {}


def chunked_draws_match(shape: tuple[int, ...], device) -> bool:
    """Whether one ``exponential_`` call over (NOISE_CHUNK, *shape) draws the same numbers as
    NOISE_CHUNK calls over ``shape`` from the same generator (it does on PyTorch's CPU kernel,
    which draws element by element; a vectorised generator might not)."""
    key = (shape, str(device))
    if key not in _CHUNKED_DRAWS:
        one, many = (torch.Generator(device=device).manual_seed(0) for _ in range(2))
        whole = torch.empty(NOISE_CHUNK, *shape, device=device).exponential_(generator=one)
        parts = [torch.empty(shape, device=device).exponential_(generator=many) for _ in range(NOISE_CHUNK)]
        _CHUNKED_DRAWS[key] = bool(torch.equal(whole, torch.stack(parts)))
    return _CHUNKED_DRAWS[key]


class Noise:
    """Exp(1) noise (rows, V) per step from one seeded generator, drawn a block at a time."""

    def __init__(self, rows: int, vocab: int, seed: int | None, device):
        self.generator = torch.Generator(device=device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        chunk = NOISE_CHUNK if chunked_draws_match((rows, vocab), device) else 1
        chunk = max(1, min(chunk, NOISE_BYTES // (4 * rows * vocab)))
        self.block = torch.empty(chunk, rows, vocab, device=device)  # (C, rows, V)
        self.views = self.block.unbind(0)  # made once
        self.used = chunk

    def next(self) -> torch.Tensor:
        if self.used == len(self.views):
            self.block.exponential_(generator=self.generator)
            self.used = 0
        self.used += 1
        return self.views[self.used - 1]  # (rows, V)


class Part(NamedTuple):
    """One request's rows as the chooser sees them."""

    config: object  # its SampleConfig
    rows: int
    noise: Noise | None  # None: greedy
    blocker: object = None  # an NgramBlocker
    bias: torch.Tensor | None = None  # (V,): --logit-bias
    constraint: object = None  # a generation.constraint.Constraint


class Chooser:
    """The filter chain for one composition of the batch. ``parts`` lists, in batch order, each
    request's ``Part``; ``history`` (B, W) holds the rows' recent ids for the penalty
    (``Histories``). The unknown symbol, ``--logit-bias`` and a constraint's mask come first,
    added to the logits before the chain."""

    def __init__(self, parts, vocab: int, unk_id: int | None, device):
        self.parts = parts = [Part(*p) for p in parts]
        rows = [(p.config, p.rows) for p in parts]
        self.B = B = sum(n for _, n in rows)

        def column(values, dtype=torch.float32):
            return torch.tensor([v for v, (_, n) in zip(values, rows) for _ in range(n)], dtype=dtype, device=device)

        self.mask = torch.zeros(vocab, device=device)  # (V,): -inf for the unknown symbol, never written
        if unk_id is not None:
            self.mask[unk_id] = float("-inf")
        if any(p.bias is not None for p in parts):  # (B, V): the mask and each row's bias
            self.mask = torch.cat([self.mask + (p.bias if p.bias is not None else 0) for p in parts for _ in range(p.rows)]).view(B, vocab)
        self.constrained = [(start, p.constraint) for start, p in zip(self._offsets(parts), parts) if p.constraint is not None]
        self.step_mask = torch.empty(B, vocab, device=device) if self.constrained else None
        self.scaled = torch.empty(B, vocab, device=device)  # (B, V)
        configs = [c for c, _ in rows]
        greedy = [c.temperature == 0 for c in configs]
        self.all_greedy = all(greedy)
        self.greedy = column(greedy, torch.bool) if any(greedy) and not self.all_greedy else None  # (B,)
        temperatures = {c.temperature or 1.0 for c in configs}
        if len(temperatures) == 1:  # (V,): one value for all rows runs faster than a column
            self.temperature = torch.full((vocab,), temperatures.pop(), device=device)
        else:
            self.temperature = column([c.temperature or 1.0 for c in configs]).unsqueeze(1)  # (B, 1)
        sampled = [c.temperature for c in configs if c.temperature > 0]
        self.may_overflow = bool(sampled) and min(sampled) < SAFE_TEMPERATURE
        self.top_k = self.top_p = self.log_min_p = self.penalty = None
        if any(c.top_k is not None for c in configs):
            ks = [min(c.top_k or vocab, vocab) for c in configs]
            self.k_max, self.top_k = max(ks), column(ks, torch.long).unsqueeze(1) - 1  # (B, 1): the k-th's place
        if any(c.top_p is not None for c in configs):
            self.top_p = column([math.inf if c.top_p is None else c.top_p for c in configs]).unsqueeze(1)
        if any(c.min_p is not None for c in configs):
            self.log_min_p = column([-math.inf if c.min_p is None else math.log(c.min_p) for c in configs]).unsqueeze(1)
        if any(c.repetition_penalty != 1.0 for c in configs):
            self.penalty = column([c.repetition_penalty for c in configs]).unsqueeze(1)  # (B, 1)
        self.blocked = [(slice(start, start + p.rows), p.blocker) for start, p in zip(self._offsets(parts), parts) if p.blocker]
        self.plain = self.penalty is None and not self.blocked and self.greedy is None and not self.may_overflow
        simple = self.plain and not self.all_greedy and len(parts) == 1 and not self.constrained
        simple = simple and self.top_k is None and self.top_p is None and self.log_min_p is None
        self.next_noise = parts[0].noise.next if simple else None
        self.ones = {}  # rows -> (rows, V) ones: the noise of greedy rows in a mixed batch

    @staticmethod
    def _offsets(parts) -> list[int]:
        starts, start = [], 0
        for p in parts:
            starts.append(start)
            start += p.rows
        return starts

    def _mask(self) -> torch.Tensor:
        """The additive mask of this step: the fixed one, and each constrained row's."""
        if not self.constrained:
            return self.mask
        mask = self.step_mask.copy_(self.mask.expand_as(self.step_mask))
        for start, constraint in self.constrained:
            for row, allowed in enumerate(constraint.masks()):
                if allowed is not None:
                    mask[start + row].add_(allowed)
        return mask

    def __call__(self, logits: torch.Tensor, history: torch.Tensor | None, out: torch.Tensor) -> torch.Tensor:
        """One token per row into ``out`` (B,), drawn from ``logits`` (B, V) (left as they are)."""
        x, mask = self.scaled, self._mask() if self.constrained else self.mask
        if self.next_noise is not None:  # one request, plain sampling: the path a single sample takes
            probs = torch.addcdiv(mask, logits, self.temperature, out=x).softmax(dim=-1)  # logits / T
            q = self.next_noise()  # (B, V): a view of the request's block, used once
            return torch.argmax(torch.div(probs, q, out=q), dim=-1, out=out)
        if self.all_greedy and self.penalty is None and not self.blocked:
            return torch.argmax(torch.add(logits, mask, out=x), dim=-1, out=out)
        if self.plain and self.top_k is None and self.top_p is None and self.log_min_p is None:
            torch.addcdiv(mask, logits, self.temperature, out=x)  # logits / T, unknown symbol -inf
            return self._draw(x.softmax(dim=-1), out)
        torch.add(logits, mask, out=x)
        if self.penalty is not None:
            x = repetition_penalty(x, history, self.penalty)
        for rows, blocker in self.blocked:
            x[rows] = blocker.apply(x[rows])
        first = x.argmax(dim=-1) if self.greedy is not None or self.may_overflow or self.all_greedy else None  # (B,)
        if self.all_greedy:
            return out.copy_(first)
        x = x / self.temperature
        if self.top_k is not None:
            kth = torch.topk(x, self.k_max, dim=-1).values.gather(1, self.top_k)  # (B, 1)
            x = x.masked_fill(x < kth, float("-inf"))
        if self.top_p is not None:
            x = _top_p(x, self.top_p)
        if self.log_min_p is not None:
            x = x.masked_fill(x < x.max(dim=-1, keepdim=True).values + self.log_min_p, float("-inf"))
        probs = x.softmax(dim=-1)  # (B, V)
        take_first = self.greedy
        if self.may_overflow:
            overflowed = ~torch.isfinite(probs).all(dim=-1)  # (B,): logits / T overflowed
            take_first = overflowed if take_first is None else take_first | overflowed
        drawn = self._draw(probs, out)
        return drawn if take_first is None else out.copy_(torch.where(take_first, first, drawn))

    def _draw(self, probs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``argmax(probs / q)`` per row, ``q`` each request's next noise."""
        if len(self.parts) == 1:
            q = self.parts[0].noise.next()  # (B, V): a view of the request's block, used once
        else:
            q = torch.cat([p.noise.next() if p.noise is not None else self._ones(p.rows, probs) for p in self.parts])
        return torch.argmax(torch.div(probs, q, out=q), dim=-1, out=out)  # (B,)

    def _ones(self, n: int, like: torch.Tensor) -> torch.Tensor:
        if n not in self.ones:
            self.ones[n] = like.new_ones(n, like.size(1))
        return self.ones[n].clone()


def _top_p(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``filters.top_p_filter`` with one ``p`` per row (B, 1)."""
    sorted_x, order = torch.sort(x, descending=True, dim=-1)  # (B, V)
    probs = sorted_x.softmax(dim=-1)
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p  # (B, V), sorted order
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return x.masked_fill(drop, float("-inf"))


class Histories:
    """The recent ids the repetition penalty looks at, one ring per row in a (B, W) tensor.

    Row r's ring is its first ``window_r`` columns, overwritten oldest first; the columns past
    its window repeat its newest id (a token counts once however often it appears, so copies of
    one inside the window change nothing). Until the prompt and the output fill the ring, its
    spare slots repeat the oldest id it holds."""

    @staticmethod
    def start(prompt_ids: list[int], window: int, rows: int, device) -> tuple[torch.Tensor, int]:
        """A request's rings (rows, window) after its prompt, and the next slot (0)."""
        recent = torch.tensor(prompt_ids[-window:], dtype=torch.long, device=device)
        ring = torch.cat([recent[:1].expand(window - len(recent)), recent])  # (window,)
        return ring.unsqueeze(0).repeat(rows, 1), 0

    def __init__(self, parts: list[tuple[torch.Tensor, int]], device):
        """``parts``: per request, its rings (rows, window) and its next slot."""
        width = max(ring.size(1) for ring, _ in parts)
        self.windows = [ring.size(1) for ring, _ in parts]
        rows = []
        for ring, slot in parts:
            newest = ring[:, (slot - 1) % ring.size(1)].unsqueeze(1)  # (rows, 1)
            rows.append(torch.cat([ring, newest.expand(-1, width - ring.size(1))], dim=1))
        self.ids = torch.cat(rows)  # (B, W)
        counts = [ring.size(0) for ring, _ in parts]
        self.window = torch.tensor([w for w, n in zip(self.windows, counts) for _ in range(n)], device=device)  # (B,)
        self.slot = torch.tensor([s for (_, s), n in zip(parts, counts) for _ in range(n)], device=device)  # (B,)
        self.ragged = any(w < width for w in self.windows)
        self.columns = torch.arange(width, device=device)
        self.counts = counts

    def add(self, tokens: torch.Tensor) -> None:
        """Each row's new token (B,) into its ring."""
        self.ids.scatter_(1, (self.slot % self.window).unsqueeze(1), tokens.unsqueeze(1))
        if self.ragged:
            past = self.columns.unsqueeze(0) >= self.window.unsqueeze(1)  # (B, W)
            self.ids = torch.where(past, tokens.unsqueeze(1), self.ids)
        self.slot += 1

    def parts(self) -> list[tuple[torch.Tensor, int]]:
        """Per request, its rings and next slot, to carry into the next composition."""
        out, start = [], 0
        for window, n in zip(self.windows, self.counts):
            out.append((self.ids[start : start + n, :window].clone(), int(self.slot[start])))
            start += n
        return out
