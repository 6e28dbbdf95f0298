"""Dynamic evaluation (Krause et al. 2017, "Dynamic Evaluation of Neural Sequence Models").

A trained model reads a text in order, one stream, ``--adapt-bptt`` tokens at a time. Each
segment is scored first, with the weights as they are, and only then used for one gradient step,
so every token is scored by weights that have learnt from the text before it and never from the
text after it:

    score segment s with weights w
    w <- w - lr * grad loss(s)             (SGD; the gradient clipped to norm 1)
    w <- w + decay * (w_trained - w)       (a pull back towards the trained weights)

The hidden state is carried from segment to segment, as in ``evaluate.stream_loss`` with one
stream. ``charlstm eval --adapt`` reports the static and the adapted figures side by side;
``charlstm sample --adapt-to FILE`` adapts the weights to a text before sampling.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.data.batches import encode_to_file, windows
from charlstm.config import AdaptConfig
from charlstm.errors import DataError
from charlstm.model import detach_hidden
from charlstm.data.text import TextSource


@contextmanager
def _adapting(model):
    """Gradients on, dropout off: train mode (a cuDNN recurrent layer can only backpropagate in
    train mode) with every dropout set to zero; the model's modes are put back afterwards."""
    was_training, rnn_dropout = model.training, model.rnn.dropout
    model.train()
    model.dropout.eval()
    model.rnn.dropout = 0.0
    try:
        with torch.enable_grad():
            yield
    finally:
        model.rnn.dropout = rnn_dropout
        model.train(was_training)


def adapt(model, ids: np.ndarray, config: AdaptConfig, device, on_progress=None) -> tuple[float, int]:
    """Score ``ids`` as one stream while adapting ``model``'s weights to it, in place.

    Returns the sum of next-token negative log-likelihoods (each token scored *before* any step
    on it) and how many tokens were scored (all but the first). ``on_progress(tokens)`` is called
    after each segment.
    """
    device = torch.device(device)
    params = [p for p in model.parameters() if p.requires_grad]
    trained = [p.detach().clone() for p in params]
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    with _adapting(model):
        for window in windows(len(ids), config.adapt_bptt):
            block = torch.from_numpy(
                np.asarray(ids[window.start : window.start + window.length + 1]).astype(np.int64)
            ).to(device)[:, None]  # (t+1, 1)
            logits, hidden = model(block[:-1], hidden)  # (t, 1, V)
            nll = F.cross_entropy(logits.float().flatten(0, 1), block[1:].flatten(), reduction="none")  # (t,)
            total += nll.detach().sum(dtype=torch.float64)
            count += nll.numel()
            grads = torch.autograd.grad(nll.mean(), params)
            with torch.no_grad():
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                scale = config.adapt_lr * torch.clamp(1.0 / (norm + 1e-6), max=1.0)  # clip to norm 1
                torch._foreach_sub_(params, torch._foreach_mul(grads, scale))
                if config.adapt_decay:
                    torch._foreach_lerp_(params, trained, config.adapt_decay)
            hidden = detach_hidden(hidden)
            if on_progress is not None:
                on_progress(window.length)
    return float(total), count


def adapt_to_source(model, tokenizer, source: TextSource, config: AdaptConfig, device, on_progress=None) -> tuple[float, int]:
    """``sample --adapt-to FILE``: adapt ``model`` to a whole text (encoded into a temporary
    memory-mapped file, so its size does not matter). Returns the mean loss per token while
    adapting and the number of tokens read."""
    with tempfile.TemporaryDirectory(prefix="charlstm-adapt-") as tmp:
        encoded = encode_to_file(source, tokenizer, Path(tmp) / "tokens")
        if len(encoded.ids) < 2:
            raise DataError(f"{source.name}: too short to adapt to: it needs at least 2 tokens")
        total, count = adapt(model, encoded.ids, config, device, on_progress)
        n_tokens = len(encoded.ids)
        del encoded  # close the memory map before the directory goes
    return total / count, n_tokens
