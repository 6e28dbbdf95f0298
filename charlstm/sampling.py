"""Sampling: pure functions on logits, and a generator that streams text from a model.

The hidden state is carried one token at a time; the prime is read once and never fed again.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator

import torch

from charlstm.config import SampleConfig
from charlstm.errors import ConfigError
from charlstm.cells import TokenStepper


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits in each row (``k`` is clamped to the vocabulary size)."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities add up to at least ``p``."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)  # (B, V)
    # Drop a token when the tokens before it already reach p; the most likely one always stays.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p  # (B, V), in sorted order
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token for each row of ``logits`` (B, V); temperature 0 means greedy."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


class TextStream:
    """Turns one sample's token bytes into text: incremental UTF-8 decoding, the ``--stop``
    string (held back until it is ruled out) and the ``--length`` limit in characters."""

    def __init__(self, length: int, stop: str | None):
        self.length = length
        self.stop = stop
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = ""  # text that may be the start of the stop string
        self.emitted = 0
        self.done = length == 0

    def feed(self, data: bytes) -> str:
        if self.done:
            return ""
        text = self.pending + self.decoder.decode(data)
        keep = ""
        if self.stop:
            at = text.find(self.stop)
            if at != -1:
                text, self.done = text[:at], True
            else:
                keep = _longest_prefix_suffix(text, self.stop)
                text = text[: len(text) - len(keep)]
        if self.emitted + len(text) + len(keep) >= self.length:
            text, keep, self.done = (text + keep)[: self.length - self.emitted], "", True
        self.pending = keep
        self.emitted += len(text)
        return text

    def finish(self) -> str:
        """What is still held back once generation ends."""
        if self.done:
            return ""
        text = (self.pending + self.decoder.decode(b"", final=True))[: self.length - self.emitted]
        self.pending, self.done = "", True
        self.emitted += len(text)
        return text


def _longest_prefix_suffix(text: str, stop: str) -> str:
    """The longest end of ``text`` that is a beginning of ``stop``."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return text[-size:]
    return ""


def encode_prime(tokenizer, prime: str) -> list[int]:
    """Token ids of the prime text; a clear error when the char vocabulary lacks some of it."""
    if not prime:
        return [default_start_id(tokenizer)]
    if tokenizer.kind == "char":
        missing = tokenizer.unknown_chars(prime)
        if missing:
            shown = ", ".join(repr(c) for c in missing[:20])
            raise ConfigError(
                f"--prime has characters the model's vocabulary lacks: {shown}; leave them out of the prime"
            )
    return tokenizer.encode(prime).tolist()


def default_start_id(tokenizer) -> int:
    """With no prime, generation starts as if after a newline (or the first known token)."""
    if tokenizer.kind == "char" and "\n" not in tokenizer.chars:
        return 0
    return int(tokenizer.encode("\n")[0])


@torch.inference_mode()
def generate(model, tokenizer, config: SampleConfig, device) -> Iterator[list[str]]:
    """Yield, after each generated token, the new text of every sample (``num_samples`` of them,
    generated together as one batch). Stops when every sample has its length or its stop string.
    """
    model.eval()
    generator = torch.Generator(device=device)
    if config.seed is not None:
        generator.manual_seed(config.seed)
    else:
        generator.seed()
    token_bytes = tokenizer.token_bytes()
    streams = [TextStream(config.length, config.stop) for _ in range(config.num_samples)]
    if config.length == 0:
        return
    prime = torch.tensor(encode_prime(tokenizer, config.prime), dtype=torch.long, device=device)
    ids = prime.unsqueeze(1).expand(-1, config.num_samples)  # (T, B)
    logits, hidden = model(ids, model.init_hidden(config.num_samples))  # (T, B, V): the prime, once
    logits = logits[-1]  # (B, V)
    step = TokenStepper(model)
    # Each token is at least one byte, and --length counts characters of at most 4 bytes, but a
    # subword piece may be longer; cap the token budget generously against runaway loops.
    budget = config.length * 4 + 64
    for _ in range(budget):
        if tokenizer.unk_id is not None:
            logits[:, tokenizer.unk_id] = float("-inf")  # never write the unknown symbol
        tok = next_tokens(logits, config.temperature, config.top_k, config.top_p, generator)  # (B,)
        pieces = [stream.feed(token_bytes[t]) for stream, t in zip(streams, tok.tolist())]
        yield pieces
        if all(stream.done for stream in streams):
            return
        logits, hidden = step(tok, hidden)  # (B, V)
    yield [stream.finish() for stream in streams]
