"""The probabilities a compressor codes with: B streams stepped in lockstep, one token a step.

The text's tokens are cut into B parts, one per stream. At step t every stream reads the token
it coded at step t-1 (the decoder has just decoded it) and gives the distribution of its next
one, so the decoder can compute exactly what the encoder computed, and in the same way:

    step t:   ids (B,) ──> TokenStepper.step_ ──> logits (B, V) ──(cache mix)──> p (B, V) ──> coder
                                    │  h (B, H): the cache's keys
    every adapt_bptt / B steps (--adapt): the window's gradients from what the stepper computed
    while coding it (an LSTM's, ``backprop``; other cells read it again teacher-forced), one step
    of the weights (``adaptation.weight_step``)

Encoder and decoder make the very same calls with the very same shapes (a finished stream is
padded, never dropped), so on the same machine the floats agree to the bit; the file records the
thread count, torch's version and kernel family, and a probe (``probe_digest``) that detects a
machine that computes other floats.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from charlstm.stepper import TokenStepper
from charlstm.config import AdaptConfig, CacheConfig
from charlstm.data.batches import windows
from charlstm.evaluation import backprop
from charlstm.evaluation.adaptation import add_pending, model_step, score_pending, window_gradients
from charlstm.evaluation.cache import (
    CONTEXT_TUNE_TOKENS, THETAS, NeuralCache, remember_read, token_nll, tunes,
)
from charlstm.evaluation.evaluate import CONTEXT_ADAPT_TOKENS, WARMUP_TOKENS, context_tails
from charlstm.model import detach_hidden

CONTEXT_WINDOW = 64  # tokens per window when a context is read (any fixed length: both sides use it)
PROBE_STEPS = 8  # stepped tokens in the probe (plus one adapting window with --adapt)


class Predictor:
    """B streams of one model in lockstep: ``probabilities`` for the next token of every stream,
    then ``advance`` with the tokens coded. With ``adapt`` the weights of ``model`` change (give a
    copy); with ``cache`` the streams share one neural cache."""

    def __init__(self, model, streams: int, *, weights: str = "fp32", adapt: AdaptConfig | None = None,
                 cache: NeuralCache | None = None, hidden=None, start: int = 0, step=None, align: bool = True,
                 stepper: TokenStepper | None = None) -> None:
        self.model, self.weights, self.adapt, self.cache = model, weights, adapt, cache
        self.streams = streams
        # ``stepper``: one already built for ``model`` and ``weights`` (it holds no state of its own;
        # without ``adapt`` the probe's and the text's share one: its int8 weights took 10 ms to build)
        self.stepper = stepper if stepper is not None else TokenStepper(model, weights)
        self.state = self.stepper.state(hidden, streams)  # a one-row state is repeated to B rows
        self.previous = torch.full((streams,), start, dtype=torch.long)  # (B,)
        self.log_probs = self.features = self.p_cache = None  # (B, V), (B, H), (B, V): for the cache
        self.active: list[int] = []  # per step of the window: how many streams were text
        if adapt is not None:
            self.params = [p for p in model.parameters() if p.requires_grad]
            self.step = step if step is not None else model_step(model, adapt)
            # A step of the weights every adapt_bptt tokens, as eval --adapt steps on one stream:
            # B streams code B tokens a step, so a window is adapt_bptt / B steps (B times fewer
            # steps of the weights per token cost 8-16% of the gain from adapting).
            self.window_steps = max(1, adapt.adapt_bptt // streams)
            # ``align``: from the second token on, one stream computes what eval --adapt does,
            # which scores a text from its second token: the first token is coded and not learnt
            # from, the first window starts after it, and without a context the state starts
            # again from zeros there, as eval's (where the windows fall moved the licences' figure
            # by 0.016 bits per byte). Formats 1 and 2 were coded without.
            self.align, self.cold = align, hidden is None
            self.window = [self.previous.clone()]  # the window's tokens, the one before it first
            self.window_start = tuple(t.clone() for t in self.state.hidden)
        # An LSTM's window is differentiated from what the stepper computed while coding it
        # (``backprop.from_steps``): no second forward pass.
        self.taped = adapt is not None and backprop.supports(model)
        self.tape: list = []  # each step's layers: gates, c, h
        self.tape_logits: list = []  # each step's logits (B, V)

    @torch.no_grad()
    def probabilities(self) -> np.ndarray:
        """(B, V) float32: each stream's distribution of its next token."""
        logits = self.stepper.step_(self.previous, self.state, tape=self.tape if self.taped else None)  # (B, V)
        if self.taped:
            self.tape_logits.append(logits.clone())
        if self.cache is None:
            return torch.softmax(logits, dim=-1).numpy()  # (B, V)
        log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
        self.features = self.state.hidden[0][-1].clone()  # (B, H): the last layer's output
        self.log_probs = log_probs
        if self.cache.ring is None:  # nothing remembered yet: the model alone
            self.p_cache = None
            return log_probs.exp().numpy()
        self.p_cache = self.cache.copy_distribution(self.features, log_probs.size(1))  # (B, V)
        return mix(log_probs, self.p_cache, self.cache.lambda_).exp().numpy()

    def advance(self, tokens: np.ndarray, active: int) -> None:
        """The tokens coded this step (B,), of which the first ``active`` are text (the rest pad a
        finished stream); the cache learns the active ones, and with ``adapt`` the window may
        end in a step of the weights."""
        tokens = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        if self.cache is not None:
            with torch.no_grad():
                if self.p_cache is not None:
                    _choose_lambda(self.cache, self.log_probs[:active], self.p_cache[:active], tokens[:active])
                self.cache.remember(self.features[:active], tokens[:active])
        self.previous = tokens
        if self.adapt is None:
            return
        self.window.append(tokens)
        self.active.append(active)
        if self.align:
            self._start_as_eval(tokens)
        elif len(self.window) > self.window_steps:
            self._learn()

    def _start_as_eval(self, tokens: torch.Tensor) -> None:
        """After the first token (``align``): the first window starts with it as its input."""
        self.align = False
        if self.cold:
            for t in self.state.hidden:
                t.zero_()
        self.window, self.active, self.tape, self.tape_logits = [tokens.clone()], [], [], []
        self.window_start = tuple(t.clone() for t in self.state.hidden)

    def _learn(self) -> None:
        """One step of the weights on the window just coded: from what the stepper computed while
        coding it (an LSTM's), or read again teacher-forced (other cells')."""
        block = torch.stack(self.window)  # (t+1, B)
        rows = torch.arange(self.streams)[None, :] < torch.tensor(self.active)[:, None]  # (t, B): text, not padding
        share = rows.float() / rows.sum().clamp_min(1)  # (t, B): the loss is the text rows' mean
        if self.taped:
            tape = backprop.from_steps(self.model, block[:-1], self.window_start, self.tape, self.tape_logits)
            self.step(backprop.gradients(self.model, tape, block[1:], share, self.params, self.adapt.adapt_depth))
            self.tape, self.tape_logits = [], []
        else:
            start = tuple(t.clone() for t in self.window_start)
            self.step(window_gradients(self.model, block[:-1], start, block[1:], share, self.params)[3])
        hidden = tuple(t.clone() for t in self.state.hidden)
        self.stepper = TokenStepper(self.model, self.weights)  # the weights changed
        self.state = self.stepper.state(hidden, self.streams)
        self.window, self.active = [self.previous.clone()], []
        self.window_start = tuple(t.clone() for t in self.state.hidden)


def mix(log_probs: torch.Tensor, p_cache: torch.Tensor, lambda_: float) -> torch.Tensor:
    """log((1 - lambda) p_model + lambda p_cache), as ``NeuralCache.distribution`` mixes."""
    lam = torch.as_tensor(lambda_, dtype=torch.float32)
    return torch.logaddexp(torch.log1p(-lam) + log_probs.float(), torch.log(lam) + p_cache.clamp_min(0).log())


def _choose_lambda(cache: NeuralCache, log_probs: torch.Tensor, p_cache: torch.Tensor, tokens: torch.Tensor) -> None:
    """Keep score of every lambda of the cache's grid on the tokens just coded, and take the best
    so far for the next step (the grid of ``NeuralCache.score``; theta stays)."""
    if len(cache.lambdas) == 1 or not len(tokens):
        return
    p_model = log_probs.gather(1, tokens[:, None])[:, 0].exp()  # (A,)
    p_copy = p_cache.gather(1, tokens[:, None])[:, 0]  # (A,)
    lambdas = torch.tensor(cache.lambdas)  # (L,)
    scores = torch.log((1 - lambdas[:, None]) * p_model[None, :] + lambdas[:, None] * p_copy[None, :])  # (L, A)
    cache.totals[0] -= scores.sum(dim=-1, dtype=torch.float64)
    cache.choice = (0, int(torch.argmin(cache.totals[0])))


def new_cache(config: CacheConfig | None, vocab_size: int | None = None) -> NeuralCache | None:
    """A cache for the streams (None without one); theta, when not given, is chosen by a context
    or is the grid's middle."""
    if config is None or config.cache_size == 0:
        return None
    return NeuralCache(config, "cpu", vocab_size=vocab_size)


def read_context(model, ids: np.ndarray, adapt: AdaptConfig | None, cache: NeuralCache | None):
    """Read a context's last tokens as ``evaluate_source``'s adapting pass does: the cache remembers
    them (its last ``CONTEXT_TUNE_TOKENS``, scored ``CACHE_SEGMENT`` tokens at a time, choose theta
    and lambda), with ``adapt`` the last ``CONTEXT_ADAPT_TOKENS`` are learnt from. The states
    before those (and a warm-up) are read in parallel parts (``remember_read``): one stream of 64
    tokens at a time read 150,000 of them in 8 s, and the tuning scored by windows of 64 rows took
    23 s, for a text of any length. Returns the hidden state after it (one row), its last token
    and the weights' step (which carries on into the text)."""
    tail = max(context_tails(len(ids), adapt, cache and CacheConfig(cache_size=cache.size)).values())
    params = [p for p in model.parameters() if p.requires_grad]
    step = model_step(model, adapt) if adapt is not None else None
    if tail < 2:
        return None, None, step
    ids = np.asarray(ids[len(ids) - tail :], dtype=np.int64)
    learn = CONTEXT_ADAPT_TOKENS if adapt is not None else 0
    read = max(0, len(ids) - max(learn, CONTEXT_TUNE_TOKENS) - WARMUP_TOKENS) if cache is not None else 0
    if read > 1:  # only remembered
        remember_read(cache, model, ids[: read + 1], "cpu")
        ids = ids[read:]
    hidden, pending = None, []
    for window in windows(len(ids), CONTEXT_WINDOW):
        block = torch.from_numpy(ids[window.start : window.start + window.length + 1])[:, None]  # (t+1, 1)
        learning = window.start + window.length >= len(ids) - learn
        if learning:
            rows = torch.full((window.length, 1), 1.0 / window.length)  # the loss: the mean
            logits, features, hidden, grads = window_gradients(
                model, block[:-1], hidden, block[1:], rows, params, adapt.adapt_depth)
        else:
            with torch.no_grad():
                logits, features, hidden = model.forward_features(block[:-1], hidden)  # (t, 1, V), (t, 1, H)
        if cache is not None and tunes(window.start + window.length, len(ids)):
            with torch.no_grad():
                add_pending(cache, pending, (features[:, 0], -token_nll(logits, block[1:])[:, 0], block[1:, 0], 0))
        elif cache is not None:
            cache.remember(features[:, 0], block[1:, 0])
        if learning:
            step(grads)
        hidden = tuple(t.detach().clone() for t in detach_hidden(hidden))
    if cache is not None:
        with torch.no_grad():
            score_pending(cache, pending)
        if len(cache.thetas) > 1:
            cache.settle_theta()
    return hidden, int(ids[-1]), step


def fix_theta(cache: NeuralCache | None) -> None:
    """Without a context to choose it, theta not given is the grid's middle (lambda is still
    chosen as the text is read)."""
    if cache is not None and len(cache.thetas) > 1:
        k = THETAS.index(THETAS[len(THETAS) // 2])
        cache.thetas, cache.totals, cache.choice = (THETAS[k],), cache.totals[k : k + 1], (0, cache.choice[1])


def probe_digest(model, streams: int, *, weights: str, adapt: AdaptConfig | None, cache: CacheConfig | None,
                 align: bool = True, stepper: TokenStepper | None = None) -> str:
    """SHA-256 of the exact float bits of the probabilities of a short fixed run through the same
    path as a file's (a context read, B streams stepped, one adapting step with ``adapt``), on a
    copy of ``model``: two machines that agree on it compute the same floats for these calls."""
    import copy

    probe = copy.deepcopy(model) if adapt is not None else model
    vocab = model.config.vocab_size
    small = None if cache is None or cache.cache_size == 0 else CacheConfig(
        cache_size=min(cache.cache_size, 64), cache_theta=cache.cache_theta, cache_lambda=cache.cache_lambda)
    ring = new_cache(small)
    context = (np.arange(2 * CONTEXT_WINDOW + 1) * 7 + 3) % vocab
    hidden, last, step = read_context(probe, context, adapt, ring)
    predictor = Predictor(probe, streams, weights=weights, adapt=adapt, cache=ring, hidden=hidden, start=last, step=step,
                          align=align, stepper=stepper if adapt is None else None)
    h = hashlib.sha256()
    steps = PROBE_STEPS + (predictor.window_steps + 2 if adapt is not None else 0)
    for t in range(steps):
        h.update(predictor.probabilities().tobytes())
        predictor.advance((np.arange(streams) * 3 + t * 5 + 1) % vocab, streams)
    return h.hexdigest()
