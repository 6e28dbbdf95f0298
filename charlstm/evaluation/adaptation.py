"""Dynamic evaluation (Krause et al. 2018, "Dynamic Evaluation of Neural Sequence Models").

A trained model reads a text in order, one stream, ``--adapt-bptt`` tokens at a time. Each
segment is scored first, with the weights as they are, and only then used for one gradient step,
so every token is scored by weights that have learnt from the text before it and never from the
text after it. Each token's gradient goes ``--adapt-depth`` steps back in time (an LSTM's; 4: on
five texts never worse than the whole segment and up to 4% better, ``backprop``). Two ways to
step (``--adapt-method``):

    sgd:  w <- w - lr * g                         (g clipped to norm 1)
          w <- w + decay * (w_trained - w)        (a pull back towards the trained weights)

    rms:  ms <- mean of g*g over the segments read so far          (per weight)
          w  <- w - lr * g / (sqrt(ms) + eps)                      (each element at most 3 lr)
          w  <- w + min(1, decay * r) * (w_trained - w),  r = sqrt(ms) / mean over tensors of mean sqrt(ms)

The rms method is Krause et al.'s: updates normalised by the root mean square of the gradients,
and a pull back that is stronger for the weights whose gradients are large. They collect the
mean squares on the training data; a checkpoint does not carry its training text, but it does
carry AdamW's second moments, the training gradients' mean squares: with ``--adapt-prior K``
(rms: 300) ms is those, K segments' worth scaled so that their total is K times the text's mean
segment so far, together with the text's own. Without them (0, or a model with no optimizer
state) ms is the text's alone, and the first segment's step is a sign step.

With ``--adapt-tune T`` (rms: 0.5) the text also chooses lr and decay (a hypergradient, as
Baydin et al. 2018 learn a learning rate): before each step, each is multiplied by
exp(-T cos), cos between the segment's gradient and the way the weights would now stand with
a larger value (each past step, or each past pull, carried through the pulls since). A text that
repeats itself raises lr (a dpkg log's went from 0.002 to about 0.006); prose lowers it and pulls
back harder (tinyshakespeare: about 0.001 and 0.035), as fixed values chosen for each text would.

The hidden state is carried from segment to segment, as in ``evaluate.stream_loss`` with one
stream. ``charlstm eval --adapt`` reports the static and the adapted figures side by side;
``charlstm sample --adapt-to FILE`` adapts the weights to a text before sampling. With a neural
cache (``evaluation.cache``) the same pass also scores each segment with the cache mixed in.
"""

from __future__ import annotations

import math
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.data.batches import Windows, encode_to_file
from charlstm.config import AdaptConfig
from charlstm.evaluation import backprop
from charlstm.evaluation.cache import CACHE_SEGMENT, NeuralCache, token_nll, tunes
from charlstm.errors import DataError
from charlstm.model import detach_hidden
from charlstm.data.text import TextSource


@contextmanager
def adapting(model):
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


def adapt(
    model,
    ids: np.ndarray,
    config: AdaptConfig,
    device,
    on_progress=None,
    cache: NeuralCache | None = None,
    skip: int = 0,
    learn: int | None = None,
    step=None,
) -> tuple[float, int] | tuple[float, int, float]:
    """Score ``ids`` as one stream while adapting ``model``'s weights to it, in place.

    Returns the sum of next-token negative log-likelihoods (each token scored *before* any step
    on it) and how many tokens were scored (all but the first); with ``cache``, also the sum
    with the cache mixed in (the steps follow the model's own loss either way). The first
    ``skip`` tokens are context, never scored: the last ``learn`` of them (all when None) are
    learnt from like the text, the ones before are only read. The cache remembers the context
    and scores only its last ``CONTEXT_TUNE_TOKENS``, which choose theta and lambda, as the
    cached pass and a compressor's context do (scoring all it learns from, 20,000 tokens, with
    each theta cost about 155 more products against the whole cache). ``on_progress(tokens)``
    is called after each segment. ``step``: the ``model_step`` of ``model`` to use
    (made here when None; the caller's can say where ``--adapt-tune`` took lr and decay).
    """
    device = torch.device(device)
    step = model_step(model, config) if step is None else step
    params = step.params
    total = torch.zeros((), dtype=torch.float64, device=device)
    cached = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    learn = skip if learn is None else learn
    settled = False
    pending: list = []  # windows the cache has yet to score
    with adapting(model):
        for window in text_windows(len(ids), config.adapt_bptt, skip):
            block = torch.from_numpy(
                np.asarray(ids[window.start : window.start + window.length + 1]).astype(np.int64)
            ).to(device)[:, None]  # (t+1, 1)
            if window.start + window.length < skip - learn:  # early context: read, not learnt from
                with torch.no_grad():
                    logits, features, hidden = model.forward_features(block[:-1], hidden)
                if cache is not None and not tunes(window.start + window.length, skip):
                    cache.remember(features[:, 0], block[1:, 0])
                elif cache is not None:  # the context's last tokens choose the cache's theta and lambda
                    with torch.no_grad():
                        cache.score(features[:, 0], -token_nll(logits, block[1:])[:, 0], block[1:, 0])
                hidden = detach_hidden(hidden)
                continue
            rows = torch.full((window.length, 1), 1.0 / window.length, device=device)  # the loss: the mean
            logits, features, hidden, grads = window_gradients(model, block[:-1], hidden, block[1:], rows, params,
                                                               config.adapt_depth)
            with torch.no_grad():
                nll = F.cross_entropy(logits.float().flatten(0, 1), block[1:].flatten(), reduction="none")  # (t,)
            first = max(0, skip - 1 - window.start)  # the first row whose target is scored
            if cache is not None and skip and first < window.length and not settled:
                cached += score_pending(cache, pending)
                cache.settle_theta()  # the text begins: theta stays as the context chose
                settled = True
            total += nll.detach()[first:].sum(dtype=torch.float64)
            count += max(0, nll.numel() - first)
            if cache is not None and not tunes(window.start + window.length, skip):  # learnt from, only remembered
                cache.remember(features[:, 0], block[1:, 0])
            elif cache is not None:
                cached += add_pending(cache, pending, (features[:, 0].detach(), -nll.detach(), block[1:, 0], first))
            step(grads)
            if on_progress is not None:
                on_progress(window.length)
    if cache is not None:
        cached += score_pending(cache, pending)
        return float(total), count, float(cached)
    return float(total), count


def window_gradients(model, inputs, hidden, targets, rows, params, depth: int | None = None):
    """One window read for a step of the weights: the logits (t, B, V), the last layer's outputs
    (t, B, H) and the state after it (detached), and the gradient of sum(rows * cross-entropy)
    (``rows`` (t, B): each row's share of the loss) for each of ``params``, each token's going
    ``depth`` steps back (``--adapt-depth``; None: the whole window). An LSTM's window goes by hand
    (``backprop``; a 1 x 512 LSTM, 64 tokens, on an AMD EPYC Zen 4: 7.3 ms against autograd's 10.2
    as 7 steps of 9 streams, 4.0 against 9.5 as 2 of 27), but one stream's whole window, which
    oneDNN's fused backward reads faster, and other cells' windows go through autograd (64 tokens
    of one stream over a whole text: 11.3 ms a window whole by autograd, 13.3 at depth 4 by hand)."""
    whole = depth is None or depth >= inputs.size(0) - 1
    if backprop.supports(model) and (inputs.size(1) > 1 or not whole):
        tape = backprop.forward(model, inputs, hidden)
        return tape.logits, tape.features, tape.hidden, backprop.gradients(model, tape, targets, rows, params, depth)
    with adapting(model):
        logits, features, hidden = model.forward_features(inputs, hidden)
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        grads = torch.autograd.grad((nll * rows.flatten()).sum(), params)
    return logits.detach(), features.detach(), detach_hidden(hidden), grads


def add_pending(cache: NeuralCache, pending: list, window: tuple) -> torch.Tensor:
    """Add one window (features, log-probabilities, targets, the first row scored) to ``pending``
    and score them all (``score_pending``) once they hold ``CACHE_SEGMENT`` rows: one read of the
    ring for them all. The sum scored, zero while they wait."""
    pending.append(window)
    if sum(len(part[1]) for part in pending) < CACHE_SEGMENT:
        return torch.zeros((), dtype=torch.float64)
    return score_pending(cache, pending)


def score_pending(cache: NeuralCache, pending: list) -> torch.Tensor:
    """Score the windows in ``pending`` (features, log-probabilities and targets of each, and the
    first row scored) with the cache as one segment, empty ``pending``, and return the sum of the
    scored rows' negative log-likelihoods with the cache mixed in."""
    if not pending:
        return torch.zeros((), dtype=torch.float64)
    features, log_p, targets = (torch.cat([part[i] for part in pending]) for i in range(3))
    nll = cache.score(features, log_p, targets)  # (T,)
    scored = torch.cat([torch.arange(len(part[1])) >= part[3] for part in pending]).to(nll.device)
    pending.clear()
    return (nll * scored).sum(dtype=torch.float64)


def text_windows(num_rows: int, bptt: int, at: int) -> Windows:
    """``bptt``-long windows with a cut at row ``at`` (where a context ends), so that a text is cut
    into the same windows whatever the length of the context read before it: where the cuts fall
    moved the adapted figure of a 100 KB Python text by up to 0.007 bits per byte."""
    first = at % bptt
    starts = np.arange(first, num_rows - 1, bptt)
    if first:
        starts = np.concatenate([[0], starts])
    lengths = np.diff(np.append(starts, num_rows - 1))
    return Windows(num_rows, bptt, starts, lengths)


# Added to the root mean square before dividing (gradients of a mean loss over a segment are
# ~1e-3..1e-1 per weight), and the most an element moves in one step, in units of lr: the first
# time a rare token's weights see a gradient, g / rms is sqrt(segments so far).
RMS_EPS = 1e-6
RMS_MAX_STEP = 3.0


def weight_step(params, config: AdaptConfig, prior=None):
    """The update rule of ``config.adapt_method`` (the module docstring) for ``params``, pulled
    back towards their values now: call it with each segment's gradients (one per parameter) and
    it steps the weights in place (``adapt``, and ``charlstm compress --adapt``). ``prior``: the
    training's mean square gradients, one per parameter (rms, with ``config.adapt_prior``)."""
    trained = [p.detach().clone() for p in params]
    if config.adapt_method == "rms":
        return _RmsStep(params, config, trained, prior if config.adapt_prior else None)
    return _SgdStep(params, config, trained)


def model_step(model, config: AdaptConfig):
    """``weight_step`` for the weights of ``model`` that learn (``step.params``), with the
    training's second moments as the prior where the model has them (``second_moments``)."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    moments = getattr(model, "second_moments", None)
    prior = [moments[name] for name, _ in named] if moments and all(n in moments for n, _ in named) else None
    return weight_step([p for _, p in named], config, prior)


class _Tuning:
    """``--adapt-tune``: lr and decay learnt from the text (the module docstring). How the weights
    would stand with a larger value, d(weights)/d(log value): for lr, weights - trained (a larger
    rate makes every step, and so every step's remainder after the pulls, larger in proportion);
    for decay, ``pulled``, each pull's share shrunk by the pulls since. A segment's gradient
    against either says whether a larger value would have scored it better."""

    def __init__(self, params, config: AdaptConfig, scratch=None) -> None:
        self.rate = config.adapt_tune
        self.lr, self.decay = config.adapt_lr, config.adapt_decay
        self.pulled = [torch.zeros_like(p) for p in params] if self.rate and self.decay else None
        # Buffers the size of the weights for in-between values: the step's own when it has some
        # (a buffer of its own cost the rms step 0.5-0.9 ms more of its 4-5).
        if scratch is None and self.rate:
            scratch = [torch.zeros_like(p) for p in params]
        self.scratch = scratch

    def follow(self, grads, params, trained, squares: float | None = None) -> None:
        """Before a step: lr and decay moved against ``grads``, the segment's gradients
        (``squares``: their sum of squares, when the caller has it)."""
        if not self.rate:
            return
        for out, p, t in zip(self.scratch, params, trained):
            torch.sub(p, t, out=out)
        norm = math.sqrt(_squares(grads) if squares is None else squares)
        self.lr *= math.exp(-self.rate * _cosine(grads, self.scratch, norm))
        if self.pulled is not None:
            self.decay = min(1.0, self.decay * math.exp(-self.rate * _cosine(grads, self.pulled, norm)))

    def pulling(self, params, trained, rates) -> None:
        """Before the pull back ``lerp(params, trained, rates)`` (``rates``: a number or one
        tensor per weight tensor): pulled <- lerp(pulled, trained - params, rates)."""
        if self.pulled is None:
            return
        for out, p, t in zip(self.scratch, params, trained):
            torch.sub(t, p, out=out)
        torch._foreach_lerp_(self.pulled, self.scratch, rates)


def _squares(tensors) -> float:
    return sum(float(n) ** 2 for n in torch._foreach_norm(tensors))


def _norm(tensors) -> float:
    return math.sqrt(_squares(tensors))


def _cosine(grads, other, norm: float) -> float:
    """cos(grads, other), 0 while ``other`` is zero."""
    dot = sum(float(torch.dot(g.reshape(-1), o.reshape(-1))) for g, o in zip(grads, other))
    return dot / (norm * _norm(other) + 1e-30)


class _SgdStep:
    """A plain step, clipped to norm 1, then the pull back."""

    primed = False  # no prior: --adapt-prior is rms's

    def __init__(self, params, config: AdaptConfig, trained) -> None:
        self.params, self.config, self.trained = params, config, trained
        self.tuning = _Tuning(params, config)

    @torch.no_grad()
    def __call__(self, grads) -> None:
        tuning = self.tuning
        tuning.follow(grads, self.params, self.trained)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = tuning.lr * torch.clamp(1.0 / (norm + 1e-6), max=1.0)  # clip to norm 1
        # The arithmetic of before --adapt-tune, to the bit: files coded with it decode.
        torch._foreach_sub_(self.params, torch._foreach_mul(grads, scale))
        if tuning.decay:
            tuning.pulling(self.params, self.trained, tuning.decay)
            torch._foreach_lerp_(self.params, self.trained, tuning.decay)


class _RmsStep:
    """Krause et al.'s RMS-normalised step with a per-weight pull back (the module docstring),
    in place on buffers made once: a fresh buffer the size of the model for each of a step's
    dozen operations cost more than the arithmetic (6.9 ms a step for 1.2M weights, now 4.2)."""

    def __init__(self, params, config: AdaptConfig, trained, prior=None) -> None:
        self.params, self.config, self.trained = params, config, trained
        self.squares = [torch.zeros_like(p) for p in params]
        self.rms = [torch.zeros_like(p) for p in params]
        self.work = [torch.zeros_like(p) for p in params]
        self.steps = 0
        self.tuning = _Tuning(params, config, scratch=self.work)
        # --adapt-prior: the training's mean squares (on the weights' devices), with the total of
        # the text's gradients' squares so far, which sets their scale at each step.
        total = sum(float(v.sum()) for v in prior) if prior is not None else 0.0
        self.primed = prior is not None and config.adapt_prior > 0 and math.isfinite(total) and total > 0
        self.prior = [v.to(p.device) for v, p in zip(prior, params)] if self.primed else None
        self.prior_total, self.text_total = total, 0.0

    @torch.no_grad()
    def __call__(self, grads) -> None:
        rms, work, tuning = self.rms, self.work, self.tuning
        squares = _squares(grads) if self.primed else None  # once, for the prior's scale and the tuning
        tuning.follow(grads, self.params, self.trained, squares)
        self.steps += 1
        torch._foreach_addcmul_(self.squares, grads, grads)
        # A copy and an add in one pass where the arithmetic is the same, to the bit (files coded
        # before decode): a few tensors, one call each.
        if self.primed:
            n = math.sqrt(self.steps + self.config.adapt_prior)
            self.text_total += squares
            # K segments of the training's mean squares, scaled to the text's mean segment so far.
            alpha = self.config.adapt_prior * (self.text_total / self.steps) / self.prior_total
            for r, sq, v in zip(rms, self.squares, self.prior):
                torch.add(sq, v, alpha=alpha, out=r)
        else:
            n = math.sqrt(self.steps)
            torch._foreach_copy_(rms, self.squares)
        torch._foreach_sqrt_(rms)  # n times sqrt(mean of g*g): the n is folded in below, not divided out
        for w, r in zip(work, rms):
            torch.add(r, RMS_EPS * n, out=w)
        torch._foreach_reciprocal_(work)
        torch._foreach_mul_(work, grads)  # g / (rms + eps), over n
        for w in work:
            w.clamp_(-RMS_MAX_STEP / n, RMS_MAX_STEP / n)
        torch._foreach_add_(self.params, work, alpha=-tuning.lr * n)
        if tuning.decay:  # the rates decay * rms / (its mean) do not depend on n
            # Each tensor's sum (_foreach_norm(rms, 1) gave the same at 13 times the cost: 1.06 ms a step).
            mean = torch.stack([r.sum() / r.numel() for r in rms]).sum() + 1e-12
            torch._foreach_mul_(rms, tuning.decay / mean)
            torch._foreach_clamp_max_(rms, 1.0)  # the rates
            tuning.pulling(self.params, self.trained, rms)
            torch._foreach_lerp_(self.params, self.trained, rms)  # w + rate (w_trained - w)


def adapt_to_source(model, tokenizer, source: TextSource, config: AdaptConfig, device,
                    on_progress=None) -> tuple[float, int, tuple[float, float]]:
    """``sample --adapt-to FILE``: adapt ``model`` to a whole text (encoded into a temporary
    memory-mapped file, so its size does not matter). Returns the mean loss per token while
    adapting, the number of tokens read, and lr and decay at the end (``--adapt-tune``)."""
    with tempfile.TemporaryDirectory(prefix="charlstm-adapt-") as tmp:
        encoded = encode_to_file(source, tokenizer, Path(tmp) / "tokens")
        if len(encoded.ids) < 2:
            raise DataError(f"{source.name}: too short to adapt to: it needs at least 2 tokens")
        step = model_step(model, config)
        total, count = adapt(model, encoded.ids, config, device, on_progress, step=step)[:2]
        n_tokens = len(encoded.ids)
        del encoded  # close the memory map before the directory goes
    return total / count, n_tokens, (step.tuning.lr, step.tuning.decay)
