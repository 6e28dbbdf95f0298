"""Loss, perplexity, bits per character and bits per byte of a model over a token stream."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlstm.corpus import get_window, windows
from charlstm.errors import DataError


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

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def stream_loss(
    model, ids: np.ndarray, batch_size: int, bptt: int, device, amp_dtype: torch.dtype | None = None
) -> tuple[float, int]:
    """Sum of next-token negative log-likelihoods over ``ids``, and how many tokens were scored.

    The stream is split into ``batch_size`` contiguous parts run side by side, each carrying its
    hidden state from window to window. The first token of each part has no context and is not
    scored; every other token is (the last part is padded, and the padding masked out).
    """
    n = len(ids)
    streams = max(1, min(batch_size, n // 2))
    rows = math.ceil(n / streams)
    flat = np.zeros(streams * rows, dtype=np.int64)
    flat[:n] = ids
    data = torch.from_numpy(flat.reshape(streams, rows).T.copy()).to(device)  # (T, B)
    valid = torch.arange(streams * rows).reshape(streams, rows).T.to(device) < n  # (T, B)

    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    state = None
    for window in windows(rows, bptt):
        x, y = get_window(data, window)  # (t, B) each
        mask = valid[window.start + 1 : window.start + 1 + window.length]  # (t, B)
        with torch.autocast(torch.device(device).type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits, state = model(x, state)  # (t, B, V)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")  # (t*B,)
        total += (nll * mask.flatten()).sum(dtype=torch.float64)
        count += int(mask.sum())
    model.train(was_training)
    return float(total), count


def evaluate_text(model, tokenizer, text: str, batch_size: int, bptt: int, device) -> EvalReport:
    """Score ``text`` with the model and report per-token, per-character and per-byte figures.

    Bits per character and per byte do not depend on the tokenizer, so char, byte and subword
    models can be compared. The mean loss over the scored tokens stands for the few unscored ones
    (one per parallel stream).
    """
    ids = tokenizer.encode(text)
    if len(ids) < 2:
        raise DataError("the text is too short to evaluate: it needs at least 2 tokens")
    nll_sum, scored = stream_loss(model, ids, batch_size, bptt, device)
    loss = nll_sum / scored
    total_bits = loss * len(ids) / math.log(2)
    n_bytes = len(text.encode("utf-8", "surrogatepass"))
    unknown = int((ids == tokenizer.unk_id).sum()) if tokenizer.unk_id is not None else 0
    return EvalReport(
        tokens=len(ids),
        chars=len(text),
        bytes=n_bytes,
        loss=loss,
        perplexity=math.exp(min(loss, 700.0)),
        bits_per_char=total_bits / len(text),
        bits_per_byte=total_bits / n_bytes,
        unknown=unknown,
    )
