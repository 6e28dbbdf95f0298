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
"""

from __future__ import annotations

import math

import numpy as np
import torch

from charlstm.config import CacheConfig
from charlstm.data.batches import windows


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of each target: ``logits`` (T, B, V), ``targets`` (T, B)
    -> (T, B), in float32 whatever the logits' dtype (``evaluate``, ``score`` and the cache)."""
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape)  # (T, B)

# The grids searched for a theta or lambda not given. theta multiplies a dot product of two states
# in [-1, 1]^hidden_size; lambda is the cache's share.
THETAS = (0.03, 0.1, 0.3, 1.0)
LAMBDAS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.7)


class NeuralCache:
    """A cache over one stream of text, read in order, segment by segment (``score``)."""

    def __init__(self, config: CacheConfig, device) -> None:
        self.size = config.cache_size
        self.thetas = (config.cache_theta,) if config.cache_theta is not None else THETAS
        self.lambdas = (config.cache_lambda,) if config.cache_lambda is not None else LAMBDAS
        device = torch.device(device)
        self.keys: torch.Tensor | None = None  # (M, H), M <= size: the latest states
        self.values = torch.zeros(0, dtype=torch.long, device=device)  # (M,): the tokens that followed
        # What each (theta, lambda) pair would have scored so far (nats), and the pair in use.
        self.totals = torch.zeros(len(self.thetas), len(self.lambdas), dtype=torch.float64, device=device)
        self.choice = (len(self.thetas) // 2, len(self.lambdas) // 2)

    @property
    def theta(self) -> float:
        return self.thetas[self.choice[0]]

    @property
    def lambda_(self) -> float:
        return self.lambdas[self.choice[1]]

    def _scores(self, features: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h_t . h_i for each row t of ``features`` (T, H) against the cache and the segment's
        earlier rows, and which of them row t may see: (T, M+T) each."""
        memory = 0 if self.keys is None else len(self.keys)
        every = keys if self.keys is None else torch.cat([self.keys, keys])  # (M+T, H)
        dots = features.float() @ every.float().T  # (T, M+T)
        t = torch.arange(len(features), device=features.device)[:, None] + memory  # (T, 1): row t's place
        j = torch.arange(memory + len(keys), device=features.device)[None, :]  # (1, M+T)
        visible = (j < t) & (j >= t - self.size)  # (T, M+T): the size positions before t
        return dots, visible

    def _remember(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        keys = features.detach().float()
        self.keys = keys if self.keys is None else torch.cat([self.keys, keys])
        self.values = torch.cat([self.values, targets])
        if len(self.values) > self.size:
            self.keys, self.values = self.keys[-self.size :], self.values[-self.size :]

    def distribution(self, features: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
        """The mixed log-distribution (T, V) for rows ``features`` (T, H) whose model
        log-distributions are ``log_probs`` (T, V), with the pair in use, each row seeing the cache
        as it is (not the segment's own rows: use ``score`` to read a text). Nothing is remembered."""
        features = features.detach()
        if self.keys is None or self.size == 0:
            return log_probs.float()
        dots = features.float() @ self.keys.T  # (T, M)
        weights = torch.softmax(self.theta * dots, dim=-1)  # (T, M)
        p_cache = torch.zeros_like(log_probs, dtype=torch.float32)  # (T, V)
        p_cache.scatter_add_(1, self.values.expand(len(features), -1), weights)
        return _mix(log_probs.float(), p_cache.clamp_min(0).log(), self.lambda_)

    def score(self, features: torch.Tensor, log_p_model: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihoods (T,) of ``targets`` (T,) under the mixture, for one segment
        of the stream: ``features`` (T, H) the last layer's outputs at the positions that predict
        ``targets`` and ``log_p_model`` (T,) the model's log-probabilities of them. Then the
        segment joins the cache and the grid's totals."""
        features, targets, log_p_model = features.detach(), targets.detach(), log_p_model.detach().float()
        if self.size == 0:
            return -log_p_model
        dots, visible = self._scores(features, features)  # (T, M+T) each
        every_value = torch.cat([self.values, targets])  # (M+T,)
        same = every_value[None, :] == targets[:, None]  # (T, M+T): positions followed by the target
        thetas = torch.tensor(self.thetas, device=dots.device)[:, None, None]  # (K, 1, 1)
        logits_cache = (thetas * dots).masked_fill(~visible, -math.inf)  # (K, T, M+T)
        log_norm = torch.logsumexp(logits_cache, dim=-1)  # (K, T); -inf where nothing is visible
        log_p_cache = torch.logsumexp(logits_cache.masked_fill(~same, -math.inf), dim=-1) - log_norm  # (K, T)
        empty = ~visible.any(dim=-1)  # (T,): nothing to copy from yet: the model alone
        log_p_cache = log_p_cache.masked_fill(empty, -math.inf)
        lambdas = torch.tensor(self.lambdas, device=dots.device)  # (L,)
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


@torch.inference_mode()
def cached_stream_loss(model, ids, config: CacheConfig, *, bptt: int, device, on_progress=None) -> tuple[float, int, NeuralCache]:
    """Sum of next-token negative log-likelihoods over ``ids`` read as one stream with the cache,
    how many tokens were scored (all but the first), and the cache (its chosen pair)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    cache = NeuralCache(config, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    for window in windows(len(ids), bptt):
        block = torch.from_numpy(
            np.asarray(ids[window.start : window.start + window.length + 1]).astype(np.int64)
        ).to(device)[:, None]  # (t+1, 1)
        logits, features, hidden = model.forward_features(block[:-1], hidden)  # (t, 1, V), (t, 1, H)
        nll = cache.score(features[:, 0], -token_nll(logits, block[1:])[:, 0], block[1:, 0])  # (t,)
        total += nll.sum(dtype=torch.float64)
        count += nll.numel()
        if on_progress is not None:
            on_progress(window.length)
    model.train(was_training)
    return float(total), count, cache
