"""The sampling filters: pure functions on logits (B, V), in the one order every draw applies them.

    1. repetition penalty    --repetition-penalty, over the last --repetition-window tokens
    2. no-repeat n-gram ban  --no-repeat-ngram
    3. temperature           --temperature; 0 stops here and takes the most likely token left
    4. top-k                 --top-k
    5. top-p                 --top-p
    6. min-p                 --min-p, relative to the most likely token after temperature
    7. sample                one token per row from what is left

The penalty and the ban come first because they decide which tokens may follow at all, so that
greedy decoding (temperature 0) respects them too. Temperature comes before the truncations so
that top-k, top-p and min-p cut the distribution that is actually sampled from. Each truncation
keeps the most likely token, so only the ban can leave a row empty, and it is lifted for a row it
would empty (see ``NgramBlocker.apply``). ``next_tokens`` applies the chain to rows that share
their settings; the engine (``generation.engine``) applies the same functions with one setting
per row, so a batch of requests with different settings is filtered in one pass.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import torch


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits in each row (``k`` is clamped to the vocabulary size)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least ``p``."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)  # (B, V)
    # Drop a token when the tokens before it already reach p; the most likely one always stays.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p  # (B, V), in sorted order
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the tokens whose probability is at least ``p`` times that of the row's most likely
    token (llama.cpp's ``--min-p``); the most likely token always stays."""
    # prob_i >= p * prob_max  <=>  logit_i >= logit_max + log(p): the softmax normaliser cancels,
    # and comparing logits avoids underflow in the tail.
    threshold = logits.max(dim=-1, keepdim=True).values + math.log(p)  # (B, 1)
    return logits.masked_fill(logits < threshold, float("-inf"))


def repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make the tokens in each row's ``history`` (B, N) less likely (the CTRL rule): a positive
    logit is divided by ``penalty``, a negative one multiplied by it. A token counts once however
    often it appears; ``penalty`` 1 changes nothing and below 1 favours repeats. ``penalty`` may
    be a (B, 1) tensor, one per row."""
    if not isinstance(penalty, torch.Tensor) and penalty == 1.0:
        return logits
    seen = logits.gather(-1, history)  # (B, N)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)  # (B, N)
    # A token repeated in the history gets the same value at each of its places, so the order
    # in which scatter writes them does not matter.
    return logits.scatter(-1, history, seen)  # (B, V)


_penalise = repetition_penalty  # next_tokens has an argument of that name, which hides the function


class NgramBlocker:
    """Bans, for each of ``batch`` sequences, every token that would repeat an n-gram already in
    that sequence (transformers' ``no_repeat_ngram_size``).

    It keeps an index per sequence, from each (n-1)-gram seen to the set of tokens that followed
    it, updated one token at a time, so a step costs the same at token 10 and at token 10,000.
    With ``n`` 1 no token may appear twice.
    """

    def __init__(self, n: int, batch: int):
        if n < 1:
            raise ValueError(f"n-gram size must be at least 1 (got {n})")
        self.n = n
        self._tails = [deque(maxlen=n - 1) for _ in range(batch)]  # each sequence's last n-1 tokens
        self._next: list[dict[tuple[int, ...], set[int]]] = [{} for _ in range(batch)]

    @classmethod
    def from_history(cls, n: int, history: Sequence[Sequence[int]] | torch.Tensor) -> NgramBlocker:
        """A blocker that has read each row of ``history`` (lists of ids, or a (B, T) tensor)."""
        rows = history.tolist() if isinstance(history, torch.Tensor) else [list(row) for row in history]
        blocker = cls(n, len(rows))
        for row, (tail, following) in zip(rows, zip(blocker._tails, blocker._next)):
            for token in row:
                _record(tail, following, n, int(token))
        return blocker

    def update(self, tokens: Sequence[int] | torch.Tensor) -> None:
        """Append one token to each sequence (``tokens`` has one id per row)."""
        values = tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens
        for tail, following, token in zip(self._tails, self._next, values):
            _record(tail, following, self.n, int(token))

    def banned(self) -> list[set[int]]:
        """For each sequence, the tokens that would complete an n-gram it already holds."""
        return [
            following.get(tuple(tail), set()) if len(tail) == self.n - 1 else set()
            for tail, following in zip(self._tails, self._next)
        ]

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, V) with the banned tokens set to -inf. A row where that would leave no
        token at all keeps its logits: something has to be written, and the ban is the only
        filter that can empty a row."""
        banned = self.banned()
        rows = [row for row, tokens in enumerate(banned) for _ in tokens]
        if not rows:
            return logits
        cols = [token for tokens in banned for token in tokens]
        index = (torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device))
        out = logits.index_put(index, torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device))
        emptied = (out == float("-inf")).all(dim=-1, keepdim=True)  # (B, 1)
        return torch.where(emptied, logits, out)

    def select(self, rows: Sequence[int] | torch.Tensor) -> None:
        """Keep the sequences ``rows`` (in that order, repeats allowed), as beam search does when
        it reorders its beams. A sequence kept twice is copied; once, it is moved."""
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        tails, nexts, used = [], [], set()
        for row in rows:
            if row in used:
                tails.append(deque(self._tails[row], maxlen=self.n - 1))
                nexts.append({key: set(tokens) for key, tokens in self._next[row].items()})
            else:
                tails.append(self._tails[row])
                nexts.append(self._next[row])
                used.add(row)
        self._tails, self._next = tails, nexts


def _record(tail: deque, following: dict, n: int, token: int) -> None:
    """Note that ``token`` followed the sequence's current (n-1)-gram, then move the window on."""
    if len(tail) == n - 1:
        following.setdefault(tuple(tail), set()).add(token)
    tail.append(token)


def no_repeat_ngram_filter(
    logits: torch.Tensor, history: Sequence[Sequence[int]] | torch.Tensor, n: int
) -> torch.Tensor:
    """``logits`` (B, V) with every token banned that would repeat an n-gram of its row's
    ``history`` (each row's whole sequence so far). Generation keeps an ``NgramBlocker`` instead
    of rebuilding one per step."""
    return NgramBlocker.from_history(n, history).apply(logits)


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    *,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    history: torch.Tensor | None = None,
    ngram_blocker: NgramBlocker | None = None,
) -> torch.Tensor:
    """Pick the next token for each row of ``logits`` (B, V); temperature 0 means greedy.

    The filters run in the order the module docstring gives. ``history`` (B, N) holds the recent
    token ids the repetition penalty looks at; ``ngram_blocker`` knows each row's whole sequence.
    """
    logits = logits.float()
    if repetition_penalty != 1.0:
        if history is None:
            raise ValueError("a repetition penalty needs the history of recent tokens")
        logits = _penalise(logits, history, repetition_penalty)
    if ngram_blocker is not None:
        logits = ngram_blocker.apply(logits)
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if min_p is not None:
        logits = min_p_filter(logits, min_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
