"""The states of one long stream, read as parallel parts: the neural cache's keys (``evaluation.cache``).

A cache must see a text's states in order, as one stream reads them; read one token at a time,
the recurrent layer waits on its weights for each token (76 us a token for 1 x 512 on two
cores). Here the stream is read in blocks of up to ``BLOCK_PARTS`` parts of ``PART_TOKENS``
tokens side by side:

    block:   part 0 ────────> part 1 ────────> ... part P-1 ────────>   (P rows of one batch)
             carries on the   starts warm: it first reads the ``PART_WARMUP``
             state exactly    tokens before it (unscored, not yielded)

The first part of each block carries on the state the block before it left, so a stream of one
part is read exactly as one stream; every other part starts from a state that has read the
tokens just before it. Segments then come out in the text's order.
"""

from __future__ import annotations

import numpy as np
import torch

PART_TOKENS = 4096  # rows a part reads
PART_WARMUP = 512  # tokens read before a part (all but a block's first) to warm its state
BLOCK_PARTS = 16  # parts side by side: a block's states are held at once (16 x 4,096 x hidden floats)
WINDOW = 256  # rows per call of the recurrent layer


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of each target: ``logits`` (T, B, V), ``targets`` (T, B)
    -> (T, B), in float32 whatever the logits' dtype (``evaluate``, ``score`` and the cache)."""
    nll = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    return nll.view(targets.shape)  # (T, B)


@torch.inference_mode()
def stream_states(model, ids: np.ndarray, segment: int, device):
    """Yield ``(start, features, log_p, targets)`` for consecutive segments of at most ``segment``
    rows covering rows ``0 .. len(ids) - 2`` in order: row j reads ``ids[j]`` and predicts
    ``ids[j + 1]``; ``features`` (t, H) the last layer's outputs, ``log_p`` (t,) the model's
    log-probabilities of the targets and ``targets`` (t,). ``model`` is in eval mode."""
    rows = len(ids) - 1
    hidden = None  # the state the last block's last part left, carried on into the next block
    for first in range(0, rows, PART_TOKENS * BLOCK_PARTS):
        count = min(rows - first, PART_TOKENS * BLOCK_PARTS)
        starts = first + np.arange(-(-count // PART_TOKENS)) * PART_TOKENS  # (P,): each part's first row
        block, features, log_p, hidden = _read_block(model, ids, starts, first + count, hidden, device)
        for p, start in enumerate(starts):
            end = min(start + PART_TOKENS, first + count)
            for a in range(start, end, segment):
                part = slice(a - start, min(a + segment, end) - start)  # the segment's rows in the block
                yield a, features[part, p], log_p[part, p], block[part.start + 1 : part.stop + 1, p]


def _read_block(model, ids, starts: np.ndarray, end: int, hidden, device):
    """Read the parts starting at ``starts`` (and ending at ``end``) side by side: their tokens
    (L+1, P), features (L, P, H), log-probabilities of their targets (L, P) and the state after the
    last part."""
    P, n = len(starts), len(ids)
    warm = _warm_states(model, ids, starts[1:], device) if P > 1 else None
    if hidden is None:
        hidden = model.init_hidden(1)
    if warm is not None:
        hidden = tuple(torch.cat([h, w], dim=1) for h, w in zip(hidden, warm))
    index = starts[None, :] + np.arange(PART_TOKENS + 1)[:, None]  # (L+1, P): each part's rows and last target
    block = torch.from_numpy(np.asarray(ids[np.minimum(index, n - 1)]).astype(np.int64)).to(device)
    features = log_p = None
    for a in range(0, PART_TOKENS, WINDOW):
        b = min(a + WINDOW, PART_TOKENS)
        logits, out, hidden = model.forward_features(block[a:b], hidden)  # (w, P, V), (w, P, H)
        if features is None:
            features = torch.empty(PART_TOKENS, P, out.size(-1), device=out.device)
            log_p = torch.empty(PART_TOKENS, P, device=out.device)
        features[a:b] = out.float()
        log_p[a:b] = -token_nll(logits, block[a + 1 : b + 1])
    # Only a full block is followed by another, and its last part ends where the block does.
    full = end - starts[-1] == PART_TOKENS
    return block, features, log_p, tuple(h[:, -1:].clone() for h in hidden) if full else None


def _warm_states(model, ids, starts: np.ndarray, device):
    """The state of each of ``starts`` after reading the ``PART_WARMUP`` tokens before it."""
    index = starts[None, :] - PART_WARMUP + np.arange(PART_WARMUP)[:, None]  # (W, S)
    block = torch.from_numpy(np.asarray(ids[index]).astype(np.int64)).to(device)
    _, _, hidden = model.forward_features(block)
    return hidden
