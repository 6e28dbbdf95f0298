"""The neural cache while generating (``sample --cache-size N``, ``chat --cache-size N``).

The cache of ``evaluation.cache`` (Grave et al. 2017), one per sample: the last layer's state h_i
at each of the last ``cache_size`` positions and the token that followed it. Before each draw the
model's distribution is mixed with the cache's,

    p(w) = (1 - lambda) p_model(w) + lambda * sum_{i: y_i = w} softmax_i(theta h_t . h_i)

so the model copies more from the prime and from what it has written: names, spellings and
phrases of the text it continues come back. The mixture replaces the logits every filter and the
temperature then work on, and the log-probabilities a ``Generation`` records are the mixture's.

theta and lambda not given are chosen on the prime, as ``eval`` chooses them while reading (the
pair of the grid that scored the prime best); with a prime of one token, the grid's middle pair.
"""

from __future__ import annotations

import torch

from charlstm.config import CacheConfig
from charlstm.evaluation.cache import LAMBDAS, THETAS, NeuralCache, _mix, token_nll


class GenerationCache:
    """For ``B`` samples, the last ``size`` states (B, size, H) and the tokens that followed them
    (B, size), kept in a ring; ``mix_`` rewrites logits in place, ``remember`` adds a position."""

    def __init__(self, config: CacheConfig, batch: int, hidden_size: int, device) -> None:
        self.config = config
        self.size = config.cache_size
        self.keys = torch.zeros(batch, self.size, hidden_size, device=device)  # (B, M, H)
        self.values = torch.zeros(batch, self.size, dtype=torch.long, device=device)  # (B, M)
        self.filled = 0  # positions held (at most size)
        self.next = 0  # the ring's slot for the next position
        self.theta = config.cache_theta
        self.lambda_ = config.cache_lambda

    @torch.inference_mode()
    def read(self, model, ids: torch.Tensor, hidden) -> None:
        """Remember a text the samples read (``ids`` (T, B), from ``hidden``; None: the zero
        state, which nothing went before): each position's state and the token after it. The last position's state is the one the next draw mixes
        with, so it is remembered with the token drawn there. Chooses theta and lambda not given
        (the first time) from how well each pair of the grid would have scored this text."""
        if hidden is not None:  # a state that went before (a chat's earlier turns) predicts the first token
            self.remember(hidden[0][-1], ids[0])
        if len(ids) < 2:
            return
        logits, features, _ = model.forward_features(ids, hidden)  # (T, B, V), (T, B, H)
        if self.theta is None or self.lambda_ is None:
            grid = NeuralCache(self.config, ids.device)
            grid.score(features[:-1, 0], -token_nll(logits[:-1, :1], ids[1:, :1])[:, 0], ids[1:, 0])
            self.theta, self.lambda_ = grid.theta, grid.lambda_
        for t in range(len(ids) - 1):  # a prime is short next to the text it starts: a loop is fine
            self.remember(features[t], ids[t + 1])

    def remember(self, features: torch.Tensor, tokens: torch.Tensor) -> None:
        """One position per sample: its state ``features`` (B, H) and the token after it (B,)."""
        if self.size == 0:
            return
        self.keys[:, self.next].copy_(features)
        self.values[:, self.next].copy_(tokens)
        self.next = (self.next + 1) % self.size
        self.filled = min(self.filled + 1, self.size)

    def mix_(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, V) := the log of the model's distribution mixed with the cache's, for
        the samples' states ``features`` (B, H). Returns ``logits``."""
        if self.filled == 0:
            return logits
        theta = self.theta if self.theta is not None else THETAS[len(THETAS) // 2]  # as NeuralCache starts
        lambda_ = self.lambda_ if self.lambda_ is not None else LAMBDAS[len(LAMBDAS) // 2]
        keys, values = self.keys[:, : self.filled], self.values[:, : self.filled]  # (B, n, H), (B, n)
        dots = torch.bmm(keys, features.float().unsqueeze(-1)).squeeze(-1)  # (B, n)
        weights = torch.softmax(theta * dots, dim=-1)  # (B, n)
        p_cache = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)  # (B, V)
        p_cache.scatter_add_(1, values, weights)
        mixed = _mix(logits.float().log_softmax(-1), p_cache.clamp_min(0).log(), lambda_)  # (B, V)
        return logits.copy_(mixed)
