"""Sampling: pure functions on logits, and a generator that streams text from a model.

The hidden state is carried one token at a time; the prime is read once and never fed again.

``next_tokens`` applies the filters in one fixed order:

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
would empty (see ``NgramBlocker.apply``).
"""

from __future__ import annotations

import codecs
import math
from collections import deque
from collections.abc import Iterator, Sequence

import torch

from charlstm.cells import Hidden, StepState, TokenStepper
from charlstm.config import SampleConfig
from charlstm.data.tokenizers import default_start_id
from charlstm.generation.cache import GenerationCache
from charlstm.errors import ConfigError


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
    often it appears; ``penalty`` 1 changes nothing and below 1 favours repeats."""
    if penalty == 1.0:
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


class TextStream:
    """Turns one sample's token bytes into text: incremental UTF-8 decoding, the ``--stop``
    string (held back until it is ruled out) and the ``--length`` limit in characters."""

    def __init__(self, length: int, stop: str | None):
        self.length = length
        self.stop = stop
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""  # text that may be the start of the stop string
        self.emitted = 0
        self.done = length == 0

    def feed(self, data: bytes) -> str:
        if self.done:
            return ""
        text = self.pending + self.decoder.decode(data)
        keep = ""
        if self.stop:
            at = text.find(self.stop)
            if at != -1:
                text, self.done = text[:at], True
            else:
                keep = _longest_prefix_suffix(text, self.stop)
                text = text[: len(text) - len(keep)]
        if self.emitted + len(text) + len(keep) >= self.length:
            text, keep, self.done = (text + keep)[: self.length - self.emitted], "", True
        self.pending = keep
        self.emitted += len(text)
        return text

    def finish(self) -> str:
        """What is still held back once generation ends."""
        if self.done:
            return ""
        text = (self.pending + self.decoder.decode(b"", final=True))[: self.length - self.emitted]
        self.pending, self.done = "", True
        self.emitted += len(text)
        return text


def _longest_prefix_suffix(text: str, stop: str) -> str:
    """The longest end of ``text`` that is a beginning of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return text[-size:]
    return ""


def encode_prime(tokenizer, prime: str, what: str = "--prime") -> list[int]:
    """Token ids of the prime text; a clear error, naming ``what`` was given, when the char
    vocabulary lacks some of it."""
    if not prime:
        return [default_start_id(tokenizer)]
    if tokenizer.kind == "char":
        missing = tokenizer.unknown_chars(prime)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise ConfigError(
                f"{what} has characters the model's vocabulary lacks: {shown}; leave them out"
            )
    return tokenizer.encode(prime).tolist()


class Generation:
    """One call of ``generate``: iterate over it for the text, then read what it measured.

    It is an iterator: it yields, after each generated token, the new text of every sample (a
    list of ``num_samples`` strings, some of them empty), and runs once. While and after it runs:

    ``hidden``
        The model's state after reading the prime and every token yielded so far, one row per
        sample. A sample that has finished (its length, or its stop string) keeps its state from
        that moment, so the tokens a batch draws for it afterwards, and throws away, leave no
        trace. Pass it as ``generate(..., hidden=...)`` to go on where this left off; the text
        cut off by ``--length`` or held back as the stop string has been read too.
    ``logprob``, ``tokens``
        Per sample, the sum of the log-probabilities (nats) of the tokens it drew, under the
        model's own softmax at temperature 1 before any filter, and how many tokens that is:
        every token drawn while the sample was running, the one that finished it included.
        ``mean_logprob`` divides the two.

    Each read of ``hidden`` and ``logits`` is a copy, taken at that moment.
    """

    def __init__(
        self, model, tokenizer, config: SampleConfig, device, hidden: Hidden | None = None, stepper=None, cache=None
    ):
        self._start = hidden
        if cache is None and config.cache_size:
            cache = GenerationCache(config.cache_config(), config.num_samples, model.rnn.hidden_size, device)
        self.cache = cache  # a GenerationCache to go on with (chat), else one made for --cache-size
        self._state: StepState | None = None  # the stepper's, updated in place, once the prime is read
        self._book = _LogprobBook(config.num_samples)
        self._inference = torch.inference_mode()
        self._steps = self._run(model, tokenizer, config, device, hidden, stepper)

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> list[str]:
        with self._inference:  # entered per token: cheaper than decorating the generator
            return next(self._steps)

    @property
    def hidden(self) -> Hidden | None:
        if self._state is None:
            return self._start
        return tuple(t.clone() for t in self._state.hidden)

    @property
    def logits(self) -> torch.Tensor | None:
        """(B, V): the next token's, given ``hidden`` (None before the prime is read)."""
        return None if self._book.current is None else self._book.current.clone()

    @property
    def logprob(self) -> list[float]:
        return self._book.totals()[0]

    @property
    def tokens(self) -> list[int]:
        return self._book.totals()[1]

    @property
    def mean_logprob(self) -> list[float]:
        """Per sample, the mean log-probability per token (nan before any token)."""
        return [lp / n if n else math.nan for lp, n in zip(*self._book.totals())]

    def _run(self, model, tokenizer, config: SampleConfig, device, hidden, stepper) -> Iterator[list[str]]:
        model.eval()
        batch = config.num_samples
        generator = torch.Generator(device=device)
        if config.seed is not None:
            generator.manual_seed(config.seed)
        else:
            generator.seed()
        token_bytes = tokenizer.token_bytes()
        if config.length == 0:
            return
        prime_ids = encode_prime(tokenizer, config.prime)
        prime = torch.tensor(prime_ids, dtype=torch.long, device=device)
        step = stepper or TokenStepper(model, config.weights)
        state = step.state(hidden, batch)  # (layers, B, H) each: a copy, updated in place from here
        cache = self.cache
        if cache is not None:  # the prime's states, before read_prime moves the state on
            start = None if hidden is None else tuple(t.clone() for t in state.hidden)
            cache.read(model, prime.unsqueeze(1).expand(-1, batch), start)
        features = state.layers[-1][0]  # (B, H): the last layer's state, a view updated in place
        book = self._book
        book.start(read_prime(model, step, prime.unsqueeze(1).expand(-1, batch), state))  # (B, V)
        self._state = state
        sample = Sampler(config, tokenizer.unk_id, book.current, generator)

        # The penalty looks at the last ``window`` ids, kept in a ring overwritten oldest-first
        # from slot 0. Until the prime and the output fill it, the spare slots repeat the oldest
        # id it holds: a token counts once however often it appears, so the copies change nothing.
        history = None
        if config.repetition_penalty != 1.0:
            window = config.repetition_window
            recent = prime[-window:]
            history = torch.cat([recent[:1].expand(window - len(recent)), recent])  # (window,)
            history = history.unsqueeze(0).repeat(batch, 1)  # (B, window)
        blocker = None
        if config.no_repeat_ngram is not None:
            blocker = NgramBlocker.from_history(config.no_repeat_ngram, [prime_ids] * batch)

        texts = _single_chars(tokenizer, token_bytes) if config.stop is None else None
        streams = None if texts is not None else [TextStream(config.length, config.stop) for _ in range(batch)]
        # Each token is at least one byte, and --length counts characters of at most 4 bytes, but
        # a subword piece may be longer; cap the token budget generously against runaway loops.
        budget = config.length if texts is not None else config.length * 4 + 64
        for position in range(budget):
            tok = book.next_slot()  # (B,)
            if cache is not None:
                cache.mix_(book.current, features)
            sample(book.current, tok, history, blocker)
            if cache is not None:
                cache.remember(features, tok)
            ids = tok.tolist()
            if history is not None:
                history[:, position % window] = tok
            if blocker is not None:
                blocker.update(ids)
            if texts is not None:  # one character per token: every sample ends at the same token
                book.drawn()
                # Read the token before yielding it, so ``hidden`` always covers what was yielded.
                step.step_(tok, state, out=book.next_logits(), token=ids[0] if batch == 1 else None)
                yield [texts[t] for t in ids]
                continue
            finished = [row for row, stream in enumerate(streams) if stream.done]  # these throw it away
            book.drawn(finished)
            pieces = [stream.feed(token_bytes[t]) for stream, t in zip(streams, ids)]
            if finished:  # a finished sample keeps its state
                rows = torch.tensor(finished, device=tok.device)
                kept = [t[:, rows] for t in state.hidden]  # (layers, F, H) each: copies
            step.step_(tok, state, out=book.next_logits())
            if finished:
                for t, old in zip(state.hidden, kept):
                    t[:, rows] = old
            yield pieces
            if all(stream.done for stream in streams):
                return
        if streams is not None:
            yield [stream.finish() for stream in streams]


def _single_chars(tokenizer, token_bytes: list[bytes]) -> list[str] | None:
    """Each token's text when every token the sampler may write is one whole character (a char
    vocabulary), so text needs no incremental decoding; else None."""
    texts = []
    for i, data in enumerate(token_bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if len(text) != 1 and i != tokenizer.unk_id:  # the unknown symbol is never written
            return None
        texts.append(text)
    return texts


class Sampler:
    """``next_tokens`` for one generation, with the unknown symbol never written, into a given
    (B,) tensor. Plain sampling at a temperature and greedy decoding run on buffers allocated
    once, drawing exactly what ``torch.multinomial`` would draw: for one sample per row it takes
    ``argmax(probs / q)`` with ``q ~ Exp(1)`` from the same generator (the Gumbel trick), which
    is done here without its checks and allocations. The filters go through ``next_tokens``."""

    def __init__(self, config: SampleConfig, unk_id: int | None, logits: torch.Tensor, generator):
        self.config, self.generator = config, generator
        self.mask = torch.zeros_like(logits[0])  # (V,): -inf for the unknown symbol, 0 elsewhere
        if unk_id is not None:
            self.mask[unk_id] = float("-inf")
        self.scaled = torch.empty_like(logits)  # (B, V)
        # Exp(1) noise for the next ``NOISE_CHUNK`` steps, drawn in one call where that draws the
        # very numbers the per-step calls would (checked once per shape and device).
        chunk = NOISE_CHUNK if _chunked_draws_match(tuple(logits.shape), logits.device) else 1
        self.noise_block = logits.new_empty(chunk, *logits.shape)  # (chunk, B, V)
        self.noise = self.noise_block.unbind(0)  # views, made once
        self.used = chunk
        self.temperature = torch.full_like(self.mask, config.temperature)  # (V,)
        c = config
        self.plain = c.repetition_penalty == 1.0 and c.no_repeat_ngram is None
        self.plain = self.plain and c.top_k is None and c.top_p is None and c.min_p is None

    def __call__(self, logits: torch.Tensor, out: torch.Tensor, history, blocker) -> torch.Tensor:
        c = self.config
        if not self.plain:
            masked = torch.add(logits, self.mask, out=self.scaled)  # (B, V)
            return out.copy_(
                next_tokens(
                    masked, c.temperature, c.top_k, c.top_p, self.generator, min_p=c.min_p,
                    repetition_penalty=c.repetition_penalty, history=history, ngram_blocker=blocker,
                )
            )
        if c.temperature == 0:
            return torch.argmax(torch.add(logits, self.mask, out=self.scaled), dim=-1, out=out)
        torch.addcdiv(self.mask, logits, self.temperature, out=self.scaled)  # logits / T, as next_tokens
        probs = self.scaled.softmax(dim=-1)  # (B, V)
        if self.used == len(self.noise):
            self.noise_block.exponential_(generator=self.generator)
            self.used = 0
        q = self.noise[self.used]  # (B, V)
        self.used += 1
        return torch.argmax(torch.div(probs, q, out=q), dim=-1, out=out)  # (B,)


NOISE_CHUNK = 64
_CHUNKED_DRAWS: dict[tuple, bool] = {}


def _chunked_draws_match(shape: tuple[int, ...], device) -> bool:
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


class _LogprobBook:
    """The logits of the last ``CHUNK`` steps and the tokens drawn from them, kept so that the
    log-probabilities are summed a chunk at a time instead of once per token."""

    CHUNK = 64

    def __init__(self, batch: int):
        self.batch = batch
        self.sums = [0.0] * batch
        self.counts = [0] * batch
        self.current: torch.Tensor | None = None  # (B, V): the logits the next token is drawn from
        self.k = 0  # tokens drawn in this chunk

    def start(self, logits: torch.Tensor) -> None:
        self.logits = logits.new_empty(self.CHUNK + 1, *logits.shape)  # (C + 1, B, V)
        self.ids = torch.empty(self.CHUNK, self.batch, dtype=torch.long, device=logits.device)  # (C, B)
        self.skipped: list[tuple[int, list[int]]] = []  # (step in chunk, rows that do not count)
        self.logit_slots, self.id_slots = self.logits.unbind(0), self.ids.unbind(0)  # views, made once
        self.current = self.logit_slots[0].copy_(logits)

    def next_slot(self) -> torch.Tensor:
        """Where the next tokens (B,) go."""
        return self.id_slots[self.k]

    def drawn(self, finished: list[int] | None = None) -> None:
        """The next tokens are in ``next_slot()``; ``finished`` rows do not count them."""
        if finished:
            self.skipped.append((self.k, finished))
        self.k += 1

    def next_logits(self) -> torch.Tensor:
        """Where the logits after the tokens just drawn go (they become ``current``)."""
        if self.k == self.CHUNK:
            self._add(*self._chunk())
            self.k, self.skipped = 0, []
        self.current = self.logit_slots[self.k]
        return self.current

    def _chunk(self) -> tuple[list[float], list[int]]:
        """Per row, the sum of the log-probabilities of this chunk's counted tokens, and their count."""
        k = self.k
        if k == 0:
            return [0.0] * self.batch, [0] * self.batch
        logprobs = self.logits[:k].float().log_softmax(dim=-1)  # (k, B, V): the model's own, unfiltered
        chosen = logprobs.gather(2, self.ids[:k].unsqueeze(2)).squeeze(2).double()  # (k, B)
        counted = torch.ones_like(chosen, dtype=torch.bool)
        for step, rows in self.skipped:
            counted[step, rows] = False
        sums = chosen.masked_fill(~counted, 0.0).sum(dim=0).tolist()  # (B,)
        return sums, counted.sum(dim=0).tolist()

    def _add(self, sums: list[float], counts: list[int]) -> None:
        self.sums = [a + b for a, b in zip(self.sums, sums)]
        self.counts = [a + b for a, b in zip(self.counts, counts)]

    def totals(self) -> tuple[list[float], list[int]]:
        if self.current is None:
            return list(self.sums), list(self.counts)
        sums, counts = self._chunk()
        return [a + b for a, b in zip(self.sums, sums)], [a + b for a, b in zip(self.counts, counts)]


# A prime up to this many tokens is read by the stepper, one token at a time: at batch 1 the fused
# layer's fixed cost per call (and per new sequence length) is larger than a few hundred steps.
STEPPED_PRIME = 256


def read_prime(model, step: TokenStepper, ids: torch.Tensor, state: StepState) -> torch.Tensor:
    """Run the model over ``ids`` (T, B) from ``state``, which moves on in place; the last step's
    logits (B, V). Both paths compute the same equations (a long prime goes through the fused
    layer, in fp32, whatever the stepper's weights)."""
    if len(ids) > STEPPED_PRIME:
        logits, hidden = model(ids, state.hidden)  # (T, B, V)
        for mine, new in zip(state.hidden, hidden):
            mine.copy_(new)
        return state.logits.copy_(logits[-1])
    for token in ids:  # (B,)
        logits = step.step_(token, state)  # (B, V)
    return logits


def generate(
    model,
    tokenizer,
    config: SampleConfig,
    device,
    hidden: Hidden | None = None,
    stepper: TokenStepper | None = None,
    cache: GenerationCache | None = None,
) -> Generation:
    """Stream ``config.num_samples`` samples, generated together as one batch (see ``Generation``
    for what it yields and records). Stops when every sample has its length or its stop string.

    ``stepper``: a ``TokenStepper`` of ``model`` to reuse (built here otherwise; an interactive
    session keeps one). ``hidden`` is a state to start from instead of zeros, such as an earlier ``Generation``'s
    ``hidden``, with one row or one per sample; the prime is read on top of it (an empty prime
    reads a newline, as always). The repetition penalty and the n-gram ban see this call's prime
    and output only. ``config.cache_size``: a neural cache (``generation.cache``) mixed into every
    draw; ``cache``: one to go on with (a chat's), which remembers this call's prime and output
    too. ``config.beam_width`` is for ``charlstm.generation.beam.beam_search``, not for this.
    """
    if config.beam_width is not None:
        raise ValueError("generate() samples; beam search is charlstm.generation.beam.beam_search")
    if hidden is not None and hidden[0].size(1) not in (1, config.num_samples):
        raise ValueError(
            f"the start state has {hidden[0].size(1)} rows; it needs 1 or one per sample "
            f"({config.num_samples})"
        )
    return Generation(model, tokenizer, config, device, hidden, stepper, cache)
