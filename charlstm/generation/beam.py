"""Beam search: the most likely continuation the model can find, keeping ``beam_width`` candidates.

Each step extends every beam by every token and keeps the ``beam_width`` extensions with the
highest total log-probability. All beams run as one batch, one in-place ``TokenStepper`` step per
token, and the hidden states follow their beams by ``index_select`` on the batch dimension. There is no
end-of-text token, so every candidate has the same length and their totals compare as they are,
with no length normalisation. Nothing is random: the same model and prime give the same text.

Width 1 is greedy decoding. A wider beam usually finds a more likely continuation than greedy,
though it is not guaranteed to: greedy's path can fall out of the beam early.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from charlstm.stepper import TokenStepper
from charlstm.data.tokenizers import default_start_id
from charlstm.generation.filters import NgramBlocker


@torch.inference_mode()
def beam_search(
    model,
    tokenizer,
    prime_ids: Sequence[int],
    length_tokens: int,
    beam_width: int,
    device,
    no_repeat_ngram: int | None = None,
    *,
    weights: str = "fp32",
) -> tuple[list[int], float]:
    """The best ``length_tokens``-token continuation of ``prime_ids`` that a beam of
    ``beam_width`` finds, and its total log-probability (nats) under the model's softmax.

    The unknown symbol is never chosen; ``no_repeat_ngram`` bans, per beam, any token that would
    repeat an n-gram of the prime and that beam (lifted where it would leave a beam no token).
    Both only take tokens out: the log-probability is the model's, normalised over every token.
    An empty prime starts after a newline, as sampling does. ``weights``: the stepper's
    (``config.WEIGHTS``); the prime is read by the fused layer in fp32.
    """
    if beam_width < 1:
        raise ValueError(f"beam width must be at least 1 (got {beam_width})")
    if length_tokens <= 0:
        return [], 0.0
    prime_ids = [int(t) for t in prime_ids] or [default_start_id(tokenizer)]
    model.eval()
    prime = torch.tensor(prime_ids, dtype=torch.long, device=device).unsqueeze(1)  # (T, 1)
    logits, hidden = model(prime)  # (T, 1, V): the prime, once
    logits = logits[-1]  # (1, V)
    vocab = logits.size(-1)
    step = TokenStepper(model, weights)
    state = step.state(hidden)  # (layers, K, H) each, updated in place
    blocker = NgramBlocker.from_history(no_repeat_ngram, [prime_ids]) if no_repeat_ngram else None

    # One beam to start with: K copies of the prime would only offer the same extensions K times.
    scores = torch.zeros(1, dtype=torch.float64, device=device)  # (K,) total log-probability
    seqs = torch.empty(1, 0, dtype=torch.long, device=device)  # (K, t) tokens so far
    for position in range(length_tokens):
        # Sums over hundreds of tokens compare beams that differ in the last digits: use float64.
        logprobs = logits.double().log_softmax(dim=-1)  # (K, V)
        if tokenizer.unk_id is not None:
            logprobs[:, tokenizer.unk_id] = float("-inf")  # never write the unknown symbol
        if blocker is not None:
            logprobs = blocker.apply(logprobs)
        totals = (scores.unsqueeze(1) + logprobs).flatten()  # (K*V,): beam k, token v at k*V + v
        top, index = totals.topk(min(beam_width, totals.numel()))  # (K',) best first
        # A tiny vocabulary can offer fewer than beam_width allowed extensions; every beam has
        # at least one (the ban is lifted where it would leave none), so some always remain.
        allowed = torch.isfinite(top)
        top, index = top[allowed], index[allowed]
        beam, tok = index // vocab, index % vocab  # (K',) each
        seqs = torch.cat([seqs.index_select(0, beam), tok.unsqueeze(1)], dim=1)  # (K', t + 1)
        scores = top
        if blocker is not None:
            blocker.select(beam)
            blocker.update(tok)
        if position + 1 < length_tokens:
            hidden = tuple(h.index_select(1, beam) for h in state.hidden)  # (layers, K', H) each
            if len(beam) == state.batch_size:
                for mine, kept in zip(state.hidden, hidden):
                    mine.copy_(kept)
            else:  # the beam grew (or a tiny vocabulary offered fewer extensions)
                state = step.state(hidden)
            logits = step.step_(tok, state)  # (K', V), overwritten by the next step
    best = int(scores.argmax())
    return seqs[best].tolist(), float(scores[best])
