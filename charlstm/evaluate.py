"""Loss, perplexity, bits per character and bits per byte of a model over a token stream."""

from __future__ import annotations

import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.batches import encode_to_file, windows
from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import EvalConfig
from charlstm.errors import DataError
from charlstm.hardware import FP32, Precision, select_device
from charlstm.text import TextSource


@dataclass
class EvalReport:
    tokens: int  # tokens in the text
    chars: int  # Unicode characters in the text
    bytes: int  # UTF-8 bytes in the text
    loss: float  # mean negative log-likelihood, nats per token
    perplexity: float  # exp(loss), per token
    bits_per_char: float
    bits_per_byte: float
    unknown: int  # characters scored as the unknown symbol (char tokenizer only)
    replacements: int  # invalid byte sequences read as U+FFFD (--encoding-errors replace)

    def to_dict(self) -> dict:
        return asdict(self)


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats) of each target: ``logits`` (T, B, V), ``targets`` (T, B)
    -> (T, B), computed in float32 whatever the logits' dtype. Shared by ``eval`` and ``score``."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")  # (T*B,)
    return nll.view(targets.shape)  # (T, B)


@torch.inference_mode()
def stream_loss(
    model, ids: np.ndarray, batch_size: int, bptt: int, device, precision: Precision | None = None
) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods over ``ids``, and how many tokens were scored.

    The stream is split into ``batch_size`` contiguous parts run side by side, each carrying its
    hidden state from window to window. The first token of each part has no context and is not
    scored; every other token is (the last part is padded, and the padding masked out).
    """
    n = len(ids)
    streams = max(1, min(batch_size, n // 2))
    rows = math.ceil(n / streams)
    starts = np.arange(streams) * rows  # where each stream begins in ``ids``

    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    hidden = None
    device = torch.device(device)
    for window in windows(rows, bptt):
        # Gather one window of rows (inputs plus the next row of targets) straight from ``ids``,
        # which may be a memory-mapped file: nothing the size of the text is ever built.
        index = starts + np.arange(window.start, window.start + window.length + 1)[:, None]  # (t+1, B)
        valid = torch.from_numpy(index[1:] < n).to(device)  # (t, B); the last stream is short
        block = torch.from_numpy(np.asarray(ids[np.minimum(index, n - 1)]).astype(np.int64)).to(device)
        x, y = block[:-1], block[1:]  # (t, B) each
        with (precision or FP32).autocast(device):
            logits, hidden = model(x, hidden)  # (t, B, V)
        total += (token_nll(logits, y) * valid).sum(dtype=torch.float64)
        count += int(valid.sum())
    model.train(was_training)
    return float(total), count


def evaluate_source(model, tokenizer, source: TextSource, batch_size: int, bptt: int, device) -> EvalReport:
    """Score a text with the model and report per-token, per-character and per-byte figures.

    The text is encoded chunk by chunk into a temporary memory-mapped file, so a large file is
    never held in memory. Bits per character and per byte do not depend on the tokenizer, so
    char, byte and subword models can be compared. The mean loss over the scored tokens stands
    for the few unscored ones (one per parallel stream).
    """
    with tempfile.TemporaryDirectory(prefix="charlstm-eval-") as tmp:
        encoded = encode_to_file(source, tokenizer, Path(tmp) / "tokens")
        ids, stats = encoded.ids, encoded.stats
        if len(ids) < 2:
            raise DataError(f"{source.name}: too short to evaluate: it needs at least 2 tokens")
        nll_sum, scored = stream_loss(model, ids, batch_size, bptt, device)
        n_tokens, encoded_unknown = len(ids), encoded.unknown
        del ids, encoded  # close the memory map before the directory goes
    loss = nll_sum / scored
    total_bits = loss * n_tokens / math.log(2)
    return EvalReport(
        tokens=n_tokens,
        chars=stats.chars,
        bytes=stats.bytes,
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_char=total_bits / stats.chars,
        bits_per_byte=total_bits / stats.bytes,
        unknown=encoded_unknown,
        replacements=stats.replacements,
    )


def evaluate_text(model, tokenizer, text: str, batch_size: int, bptt: int, device) -> EvalReport:
    """``evaluate_source`` for a text in memory."""
    return evaluate_source(model, tokenizer, TextSource.from_text(text), batch_size, bptt, device)


def evaluate_checkpoint(checkpoint: str, source: TextSource, config: EvalConfig) -> EvalReport:
    """``charlstm eval``: load ``checkpoint`` (checked before the text is read) and score ``source``
    with windows of ``config.bptt`` (default: the length the model was trained with)."""
    device = select_device(config.device)
    payload = load_checkpoint(checkpoint)
    model, tokenizer = model_from_checkpoint(payload, device, checkpoint)
    saved = payload.get("train_config")
    saved_bptt = saved.get("bptt") if isinstance(saved, dict) else None
    bptt = config.bptt or (saved_bptt if type(saved_bptt) is int and 1 <= saved_bptt <= 1 << 20 else 128)
    return evaluate_source(model, tokenizer, source, config.batch_size, bptt, device)
