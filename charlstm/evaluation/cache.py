"""The neural cache (Grave et al. 2017, "Improving Neural Language Models with a Continuous Cache";
awd-lstm-lm's ``pointer.py``).

The cache remembers, for each of the last ``cache_size`` positions i of the text, the last layer's
output h_i and the token y_i that followed it. At position t the model's distribution is mixed
with one that copies the tokens that followed states like h_t:

    p_cache(w) = sum_{i in window, y_i = w} exp(theta h_t.h_i) / sum_{i in window} exp(theta h_t.h_i)
    p(w)       = (1 - lambda) p_model(w) + lambda p_cache(w)

A text that repeats itself (identifiers, boilerplate clauses, log headers) is copied from the
cache long before a small model has learnt it. Each token sees only the positions before it: a
segment of T tokens is scored with one matmul against the cache and the segment itself, masked
so that row t sees the ``cache_size`` positions before t.

theta and lambda not given are chosen as the text is read, never from text not yet scored: the
cache keeps the log-likelihood every pair of a small grid would have had so far and scores each
segment with the best pair up to the segment before (the first with the grid's middle). The
hidden states do not depend on theta and lambda, so the grid costs one extra softmax per theta.

A large cache (each theta of the grid in turn while theta is being chosen) is scored by the fast
product (``NeuralCache(exact=False)``, the default), a ``RING_CHUNK`` of the ring at a time: one
product against a copy of the ring held in low precision (``evaluation.ring``: int8 on an x86
CPU, bf16 on a GPU) with theta folded into the query and each row's shift applied by the
product, so it writes theta h_t.h_i - s_t directly (in bits); one exp2 in place; and one product
of those weights with the ring's one-hot tokens (a vocabulary of at most ``ONE_HOT_MAX_VOCAB``;
a larger one adds each state's weights to its token's row), which gives each row the cache's
mass on every token at once. The shift s_t is theta times the row's best dot product with the
segment and the ring's newest ``PILOT_STATES`` states (exact, float32) plus ``SHIFT_NATS``: the
states that carry weight come out of the product near zero, where bf16 rounds finely (a bf16
product of the raw dot products, which reach 50 and more, moved log p_cache by 0.01 nats at
theta 3). The segment's own rows are scored exactly. Measured against the exact product on
trained models (benchmarks/RESULTS.md, "A fast cache" and "An int8 cache"), and tested within
1e-4 nats per token of it.
"""

from __future__ import annotations

import math

import torch

from charlstm.config import CacheConfig
from charlstm.evaluation.ring import LowRing, Query, fast_kind
from charlstm.evaluation.states import stream_states, token_nll  # noqa: F401 (token_nll: imported from here)


# The grids searched for a theta or lambda not given. theta multiplies a dot product of two states
# in [-1, 1]^hidden_size; lambda is the cache's share.
EMPTY = -(1 << 62)  # the place of a ring slot not yet written: never within reach

# The last tokens of a context (``cached_stream_loss``'s ``skip``) scored to choose theta and
# lambda; the cache only remembers the context before them.
CONTEXT_TUNE_TOKENS = 4096

def tunes(end: int, skip: int) -> bool:
    """Whether a window of the stream ending at ``end`` is scored by the cache (it is text, or
    among the context's last ``CONTEXT_TUNE_TOKENS``, which choose theta and lambda) rather than
    only remembered, for a stream whose first ``skip`` tokens are context."""
    return end >= skip - CONTEXT_TUNE_TOKENS


THETAS = (0.03, 0.1, 0.3, 1.0, 3.0)

# The fast product (see the module docstring): the smallest cache it is used for, the largest
# vocabulary it keeps a one-hot copy of the ring's tokens for (a chunk's product with it took 0.25 ms
# for 97 tokens, 2.6 ms for 1,195, where adding the weights to their tokens' rows takes 0.5 ms),
# the ring's newest states whose exact dot products set each row's shift, and how far
# (in nats) above that best the shift sits, so that a state a little better than it is no
# overflow (the weights stay within bf16's and float32's range: e^-87 to e^88).
FAST_MIN_STATES = 8192
CACHE_SEGMENT = 512  # tokens scored together by one product against the ring (at least)
ONE_HOT_MAX_VOCAB = 256
PILOT_STATES = 1024
SHIFT_NATS = 16.0
# At most this many rows (and no places to mask: ``copy_distribution``) read the ring as one product
# (``_whole_mass``): for 8 rows against 150,000 states of 512 it took 8.3 ms against 17.5 by
# chunks (1 row: 6.1 against 8.8; 27 rows: 13 against 23; an AMD EPYC Zen 4, bf16).
WHOLE_MAX_ROWS = 64
RING_CHUNK = 4096  # ring states per product (``_chunked_mass``): 12% faster than 2,048, 16,384 as slow as 2,048
# A state's weight below 2^-126 (float32's and bf16's smallest normal number) counts as 2^-126: exp2
# of the far smaller ones, which are most of the ring, ran five times as slowly, and beside the
# states that matter (near 2^-23, ``SHIFT_NATS`` below the shift) they weigh nothing.
FLOOR_BITS = -126.0
LAMBDAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 0.95)


class NeuralCache:
    """A cache over one stream of text, read in order, segment by segment (``score``)."""

    def __init__(self, config: CacheConfig, device, *, vocab_size: int | None = None, exact: bool = False) -> None:
        self.size = config.cache_size
        # The fast product needs the vocabulary's size (its one-hot copy of the ring's tokens).
        self.fast = not exact and vocab_size is not None and self.size >= FAST_MIN_STATES
        self.vocab_size = vocab_size
        self.fast_segments = 0  # segments scored by the fast product (tests and benchmarks read it)
        self.low: LowRing | None = None  # the ring in low precision (the fast product's)
        self.ring_tokens: torch.Tensor | None = None  # (V, size): one-hot of ring_values, a column a slot
        self.thetas = (config.cache_theta,) if config.cache_theta is not None else THETAS
        self.lambdas = (config.cache_lambda,) if config.cache_lambda is not None else LAMBDAS
        self.device = torch.device(device)
        # A ring of ``size`` slots, allocated at the first state: each slot's state, the token
        # that followed it and its place in the stream (EMPTY before it is written).
        self.ring: torch.Tensor | None = None  # (size, H)
        self.ring_values = torch.zeros(self.size, dtype=torch.long, device=self.device)  # (size,)
        self.ring_places = torch.full((self.size,), EMPTY, dtype=torch.long, device=self.device)  # (size,)
        self.count = 0  # positions remembered so far: the next one's place in the stream
        # What each (theta, lambda) pair would have scored so far (nats), and the pair in use.
        self.totals = torch.zeros(len(self.thetas), len(self.lambdas), dtype=torch.float64, device=self.device)
        self.choice = (len(self.thetas) // 2, len(self.lambdas) // 2)

    @property
    def theta(self) -> float:
        return self.thetas[self.choice[0]]

    @property
    def lambda_(self) -> float:
        return self.lambdas[self.choice[1]]

    @property
    def filled(self) -> int:
        return min(self.count, self.size)

    @property
    def keys(self) -> torch.Tensor | None:
        """(M, H): the states held, M <= size (in the ring's order, not the text's)."""
        return None if self.ring is None else self.ring[: self.filled]

    @property
    def values(self) -> torch.Tensor:
        """(M,): the token that followed each of ``keys``."""
        return self.ring_values[: self.filled]

    def settle_theta(self) -> None:
        """Keep only the theta that has done best so far (lambda is still chosen as the text is
        read): after a context, the text costs one pass per segment instead of one per theta."""
        k = self.choice[0]
        self.thetas, self.totals, self.choice = (self.thetas[k],), self.totals[k : k + 1], (0, self.choice[1])

    def remember(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        """Add states ``features`` (T, H) and the tokens that followed them ``targets`` (T,) to
        the cache without scoring them (a context whose start is only remembered)."""
        self._remember(features.detach(), targets.detach())

    def _remember(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        if self.size == 0:
            return
        if self.ring is None:
            self.ring = torch.zeros(self.size, features.size(-1), device=self.device)
            if self.fast:
                self.low = LowRing(self.size, features.size(-1), self.device, fast_kind(self.device))
                if self.vocab_size <= ONE_HOT_MAX_VOCAB:
                    self.ring_tokens = torch.zeros(self.vocab_size, self.size, dtype=self.low.dtype, device=self.device)
        places = torch.arange(self.count, self.count + len(targets), device=self.device)[-self.size :]
        slots = places % self.size
        kept = features[-len(places) :].float()
        self.ring.index_copy_(0, slots, kept)
        if self.low is not None:
            self.low.write(slots, kept)
        if self.ring_tokens is not None:
            one_hot = torch.nn.functional.one_hot(targets[-len(places) :], self.vocab_size)
            self.ring_tokens.index_copy_(1, slots, one_hot.T.to(self.ring_tokens.dtype))
        self.ring_values.index_copy_(0, slots, targets[-len(places) :])
        self.ring_places.index_copy_(0, slots, places)
        self.count += len(targets)

    def distribution(self, features: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """The mixed log-distribution (T, V) for rows ``features`` (T, H) whose model
        log-distributions are ``log_probs`` (T, V), with the pair in use, each row seeing the cache
        as it is (not the segment's own rows: use ``score`` to read a text). Nothing is remembered."""
        if self.ring is None or self.size == 0:
            return log_probs.float()
        p_cache = self.copy_distribution(features, log_probs.size(-1))  # (T, V)
        return _mix(log_probs.float(), p_cache.clamp_min(0).log(), self.lambda_)

    def copy_distribution(self, features: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """p_cache (T, V) of rows ``features`` (T, H) against the states held (at least one):
        by the fast product when it applies, else exactly."""
        features = features.detach().float()
        if self.low is not None and self.filled >= FAST_MIN_STATES:
            no_own = torch.full((len(features),), -math.inf, device=self.device)
            mass, _, _ = self._ring_mass(features, no_own, self.theta)  # (T, V)
            total = mass.sum(dim=-1, keepdim=True)  # (T, 1)
            if bool(torch.isfinite(total).all()) and bool((total > 0).all()):
                self.fast_segments += 1
                return mass / total
        weights = torch.softmax(self.theta * (features @ self.keys.T), dim=-1)  # (T, M)
        p_cache = torch.zeros(len(features), vocab_size, dtype=torch.float32, device=self.device)  # (T, V)
        return p_cache.scatter_add_(1, self.values.expand(len(features), -1), weights)

    def score(self, features: torch.Tensor, log_p_model: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihoods (T,) of ``targets`` (T,) under the mixture, for one segment
        of the stream: ``features`` (T, H) the last layer's outputs at the positions that predict
        ``targets`` and ``log_p_model`` (T,) the model's log-probabilities of them. Then the
        segment joins the cache and the grid's totals.

        One (T, M+T) matrix of dot products against the ring and the segment; positions a row
        may not see (later ones, or more than ``size`` back) are -inf. Per theta, four passes over
        it: scale and exponentiate (after subtracting each row's largest, once), sum, and a dot
        with the mask of positions followed by the target."""
        features, targets, log_p_model = features.detach().float(), targets.detach(), log_p_model.detach().float()
        if self.size == 0:
            return -log_p_model
        T = len(targets)
        here = torch.arange(self.count, self.count + T, device=self.device)  # (T,): each row's place
        own = here[None, :] < here[:, None]  # (T, T): the segment's earlier rows
        own &= here[None, :] >= here[:, None] - self.size
        log_p_cache = None
        if self.low is not None and self.filled >= FAST_MIN_STATES:  # each theta of the grid by the fast product
            rows = [self._fast(features, targets, here, own, theta) for theta in self.thetas]
            log_p_cache = None if any(row is None for row in rows) else torch.cat(rows)  # (K, T)
        if log_p_cache is None:
            log_p_cache = self._exact(features, targets, here, own)
        empty = torch.isnan(log_p_cache[0])  # (T,): nothing to copy from yet: the model alone
        log_p_cache = log_p_cache.nan_to_num(nan=-math.inf)
        return self._mix_and_learn(log_p_cache, empty, log_p_model, features, targets)

    def _exact(self, features, targets, here, own) -> torch.Tensor:
        """log p_cache of each target (K, T) for each theta: every visible state scored in
        float32; NaN for a row with nothing visible."""
        T = len(targets)
        if self.ring is None:
            dots = features @ features.T  # (T, T)
            visible, every_value = own, targets
        else:
            dots = torch.cat([features @ self.ring.T, features @ features.T], dim=1)  # (T, size+T)
            held = self.ring_places[None, :] >= here[:, None] - self.size  # (T, size); EMPTY never
            visible = torch.cat([held, own], dim=1)
            every_value = torch.cat([self.ring_values, targets])  # (size+T,)
        dots.masked_fill_(~visible, -math.inf)
        empty = ~visible.any(dim=-1)  # (T,): nothing to copy from yet: the model alone
        top = dots.amax(dim=-1, keepdim=True).masked_fill_(empty[:, None], 0.0)  # (T, 1)
        centred = dots.sub_(top)  # (T, M+T): <= 0, -inf where hidden
        same = (every_value[None, :] == targets[:, None]).float()  # (T, M+T): followed by the target
        weights = torch.empty_like(centred)
        log_p_cache = torch.empty(len(self.thetas), T, device=self.device)  # (K, T)
        for k, theta in enumerate(self.thetas):
            torch.mul(centred, theta, out=weights).exp_()  # (T, M+T), 0 where hidden
            log_p_cache[k] = torch.linalg.vecdot(weights, same).log() - weights.sum(dim=-1).log()
        return log_p_cache.masked_fill(empty, math.nan)  # -inf: nothing visible was followed by it

    def _fast(self, features, targets, here, own, theta: float) -> torch.Tensor | None:
        """``_exact`` for one theta and a full-enough ring by the fast product (the module
        docstring): (1, T); None when a row's weights left the float range (the exact path then)."""
        own_dots = (features @ features.T).masked_fill_(~own, -math.inf)  # (T, T), exact
        mass, shift, scale = self._ring_mass(features, own_dots.amax(dim=-1), theta, here)  # (T, V), (T,)
        own_weights = torch.exp2(scale * own_dots - shift[:, None])  # (T, T), 0 where hidden
        total = mass.sum(dim=-1) + own_weights.sum(dim=-1)  # (T,)
        hit = mass.gather(1, targets[:, None])[:, 0] + (own_weights * (targets[None, :] == targets[:, None])).sum(dim=-1)
        if not bool(torch.isfinite(total).all()):
            return None
        self.fast_segments += 1
        return (hit.log() - total.log())[None, :]  # (1, T)

    def _ring_mass(self, features, best_own, theta: float, here=None):
        """The ring's weight on every token for each row (T, V), as 2^(theta h_t.h_i / ln 2 - shift_t),
        the shift (T,) and theta / ln 2. The shift sits ``SHIFT_NATS`` above the row's best dot product
        with its own visible rows (``best_own``, -inf for none) and the ring's newest states; a row
        whose weights overflow (a state far above that) is shifted to its best state and made again.
        With ``here`` (each row's place), states more than the cache's size before a row are left out."""
        n = self.filled
        newest = torch.arange(self.count - min(PILOT_STATES, n), self.count, device=self.device) % self.size
        pilot = torch.maximum(best_own, (features @ self.ring[newest].T).amax(dim=-1))  # (T,)
        scale = theta / math.log(2)  # in bits: exp2 is three times as fast as exp here
        query = self.low.query(scale * features, scale * pilot + SHIFT_NATS / math.log(2))
        mass, shift = self._mass(query, here), query.shift.clone()  # (T, V), (T,)
        far = torch.nonzero(~torch.isfinite(mass).all(dim=-1))[:, 0]  # rows whose best is far above the pilot's
        if len(far):
            top = (scale * features[far] @ self.ring[:n].T).amax(dim=-1)  # (F,): exact, in bits
            again = self.low.query(scale * features[far], top)
            mass[far] = self._mass(again, None if here is None else here[far])
            shift[far] = again.shift
        return mass, shift, scale

    def _mass(self, query: Query, here=None) -> torch.Tensor:
        """The ring's weight on every token for each row of ``query`` (T, V): a few rows with no
        places to mask read the whole ring at once, more rows a chunk at a time."""
        return self._whole_mass(query) if here is None and query.rows <= WHOLE_MAX_ROWS else self._chunked_mass(query, here)

    def _whole_mass(self, query: Query) -> torch.Tensor:
        """``_chunked_mass`` for a few rows (a compressor's streams, a sampler's), every state at
        once: the rows' weights (n, T) are small, and the ring is read once; each weight is added
        to its token's row in float32."""
        n = self.filled
        weights = self.low.bits(query, 0, n).clamp_min_(FLOOR_BITS).exp2_()  # (n, T)
        mass_t = torch.zeros(self.vocab_size, query.rows, dtype=torch.float32, device=self.device)
        return mass_t.index_add_(0, self.ring_values[:n], weights.float()).T

    def _chunked_mass(self, query: Query, here=None) -> torch.Tensor:
        """sum_i 2^(q_t . h_i - shift_t) one_hot(y_i) (T, V), float32, a ``RING_CHUNK`` of states
        at a time: the chunk's (C, T) weights stay in the CPU's cache (one product against the whole
        ring is bound by memory and took twice as long), and the ring is the products' left side,
        which oneDNN reads as it is (a right side is repacked at every call)."""
        n = self.filled
        mass_t = torch.zeros(self.vocab_size, query.rows, dtype=torch.float32, device=self.device)  # (V, T)
        edge = None
        if here is not None:
            places = self.ring_places[:n]
            edge = torch.nonzero(places < here[-1] - self.size)[:, 0]  # slots out of reach of some rows
        for a in range(0, n, RING_CHUNK):
            b = min(n, a + RING_CHUNK)
            weights = self.low.bits(query, a, b).clamp_min_(FLOOR_BITS)  # (C, T): (theta h_t.h_i) / ln 2 - shift
            if edge is not None and len(edge) and int(edge[0]) < b and int(edge[-1]) >= a:
                slots = edge[(edge >= a) & (edge < b)]
                hidden_from = self.ring_places[slots][:, None] < here[None, :] - self.size  # (E, T)
                weights[slots - a] = weights[slots - a].masked_fill(hidden_from, -math.inf)
            if self.ring_tokens is not None:
                mass_t += self.ring_tokens[:, a:b] @ weights.exp2_()
            else:
                mass_t.index_add_(0, self.ring_values[a:b], weights.exp2_().float())
        return mass_t.T

    def _mix_and_learn(self, log_p_cache, empty, log_p_model, features, targets) -> torch.Tensor:
        """The mixture's negative log-likelihoods (T,) with the pair in use; then the grid's
        totals and the pair for the next segment, and the segment joins the cache."""
        lambdas = torch.tensor(self.lambdas, device=self.device)  # (L,)
        mixed = _mix(log_p_model[None, None, :], log_p_cache[:, None, :], lambdas[None, :, None])  # (K, L, T)
        mixed = torch.where(empty, log_p_model, mixed)
        nll = -mixed[self.choice]  # (T,): with the pair chosen before this segment
        self.totals -= mixed.sum(dim=-1, dtype=torch.float64)
        best = int(torch.argmin(self.totals))
        self.choice = divmod(best, len(self.lambdas))
        self._remember(features, targets)
        return nll


def _mix(log_p_model, log_p_cache, lambda_):
    """log((1 - lambda) p_model + lambda p_cache), elementwise, for lambda in [0, 1)."""
    lambda_ = torch.as_tensor(lambda_, dtype=torch.float32)
    return torch.logaddexp(torch.log1p(-lambda_) + log_p_model, torch.log(lambda_) + log_p_cache)


def remember_read(cache: NeuralCache, model, ids, device) -> None:
    """Remember the states of ``ids`` (rows ``0 .. len(ids) - 2``, each followed by the next token)
    read in parallel parts (``stream_states``), ``model`` in eval mode meanwhile: the early part of a
    context, only remembered (``evaluate``'s adapting pass, a compressor's ``read_context``)."""
    was_training = model.training
    model.eval()
    for _, features, _, targets in stream_states(model, ids, CACHE_SEGMENT, device):
        cache.remember(features, targets)
    model.train(was_training)


@torch.inference_mode()
def cached_stream_loss(
    model, ids, config: CacheConfig, *, bptt: int, device, skip: int = 0, on_progress=None, exact: bool = False
) -> tuple[float, int, NeuralCache]:
    """Sum of next-token negative log-likelihoods over ``ids`` read as one stream with the cache,
    how many tokens were scored (all but the first, and none of the first ``skip``: context,
    which fills the cache and chooses its pair unscored; theta is then kept for the text), and
    the cache (its chosen pair). The states are read in parallel parts (``evaluation.states``)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    cache = NeuralCache(config, device, vocab_size=model.config.vocab_size, exact=exact)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    settled = False
    for start, features, log_p, targets in stream_states(model, ids, max(bptt, CACHE_SEGMENT), device):
        if not tunes(start + len(targets), skip):  # early context: only remembered
            cache.remember(features, targets)
            continue
        first = max(0, skip - 1 - start)  # the first row whose target is scored
        if skip and first < len(targets) and not settled:  # the text begins: theta stays as the context chose
            cache.settle_theta()
            settled = True
        nll = cache.score(features, log_p, targets)  # (t,)
        total += nll[first:].sum(dtype=torch.float64)
        count += max(0, nll.numel() - first)
        if on_progress is not None:
            on_progress(len(targets))
    model.train(was_training)
    return float(total), count, cache
