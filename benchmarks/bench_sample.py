"""Generation speed: charlstm's sampler against nn.LSTM called one token at a time, side by side.

All at the reference shape (vocabulary of tinyshakespeare, embedding 128, 2 x 512), untrained
weights (speed does not depend on them), CPU. Contenders, alternating round by round:

- charlstm ``generate``, batch 1: the whole path, sampling and text decoding included;
- nn.Embedding -> nn.LSTM -> nn.Linear called once per token with PyTorch's defaults, then
  softmax + multinomial (what a straightforward sampler does), and the same with oneDNN disabled;
- charlstm ``generate`` with 16 samples in one batch (total characters per second).

Also: time to first character after the checkpoint is loaded; ``charlstm chat``'s latency (time
from Enter to the reply's first character, the session already holding a text); and beam search
throughput (tokens of the continuation per second) at several widths.

    python benchmarks/bench_sample.py [--rounds 5] [--length 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import REFERENCE, corpus_text, interleave, machine, print_table, stats, write_json  # noqa: E402

from charlstm.generation.beam import beam_search  # noqa: E402
from charlstm.generation.chat import ChatSession  # noqa: E402
from charlstm.config import ModelConfig, SampleConfig  # noqa: E402
from charlstm.model import LanguageModel  # noqa: E402
from charlstm.generation.sampling import generate  # noqa: E402
from charlstm.data.tokenizers import CharTokenizer  # noqa: E402


def reference_model(vocab_size: int, device: str = "cpu", **shape) -> LanguageModel:
    """An untrained model of the reference shape, or of ``shape``'s sizes where given (speed does
    not depend on the weights)."""
    torch.manual_seed(0)
    sizes = {k: REFERENCE[k] for k in ("embedding_dim", "hidden_size", "num_layers")}
    config = ModelConfig(vocab_size=vocab_size, **{**sizes, **shape})
    return LanguageModel(config).to(device).eval()


def generate_rate(model, tokenizer, num_samples: int, length: int, device: str = "cpu") -> float:
    """Characters per second (all samples together) of charlstm's ``generate``: ``num_samples``
    samples of ``length`` characters in one batch, text decoding included."""
    config = SampleConfig(prime="\n", length=length, num_samples=num_samples, seed=1, temperature=1.0)
    start = time.perf_counter()
    chars = sum(len(p) for pieces in generate(model, tokenizer, config, device) for p in pieces)
    return chars / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=1000, help="characters per sample")
    parser.add_argument("--json")
    args = parser.parse_args()

    text, name = corpus_text()
    tok = CharTokenizer.train(text)
    model = reference_model(tok.vocab_size)

    def charlstm(num_samples: int):
        return lambda: generate_rate(model, tok, num_samples, args.length)

    def per_token_nn_lstm(onednn: bool):
        def run() -> float:
            torch.backends.mkldnn.enabled = onednn
            try:
                with torch.inference_mode():
                    x, state = torch.zeros(1, 1, dtype=torch.long), None
                    g = torch.Generator().manual_seed(1)
                    start = time.perf_counter()
                    for _ in range(args.length):
                        out, state = model.rnn(model.embedding(x), state)
                        probs = model.head(out[0]).softmax(-1)
                        x = torch.multinomial(probs, 1, generator=g).view(1, 1)
                    return args.length / (time.perf_counter() - start)
            finally:
                torch.backends.mkldnn.enabled = True

        return run

    contenders = {
        "charlstm generate, 1 sample": charlstm(1),
        "nn.LSTM per token, defaults": per_token_nn_lstm(True),
        "nn.LSTM per token, oneDNN off": per_token_nn_lstm(False),
        "charlstm generate, 16 samples (total)": charlstm(16),
    }
    for run in contenders.values():  # warm-up
        run()
    rates = interleave(contenders, args.rounds)

    first = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for pieces in generate(model, tok, SampleConfig(prime="ROMEO:", length=50, seed=1), "cpu"):
            if pieces[0]:
                first.append(time.perf_counter() - start)
                break

    # charlstm chat: a session that has written a few turns; Enter on a 40-character line.
    session = ChatSession(model, tok, SampleConfig(length=200, seed=1, device="cpu"), "cpu")
    for _ in range(3):
        "".join(session.reply("ROMEO: what say you to this, my lord?"))
    latency = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for piece in session.reply("JULIET: and what of the night, my love?"):
            if piece:
                latency.append(time.perf_counter() - start)
                break
    beam_rates = {}
    prime_ids = tok.encode("ROMEO:").tolist()
    for width in (1, 4, 8):
        runs = []
        for _ in range(max(1, args.rounds // 2)):
            start = time.perf_counter()
            ids, _ = beam_search(model, tok, prime_ids, 200, width, "cpu")
            runs.append(len(ids) / (time.perf_counter() - start))
        beam_rates[f"beam search, width {width}, tokens/s"] = runs

    base = rates["nn.LSTM per token, defaults"]
    speedup = [a / b for a, b in zip(rates["charlstm generate, 1 sample"], base)]
    batch_gain = [
        a / b
        for a, b in zip(rates["charlstm generate, 16 samples (total)"], rates["charlstm generate, 1 sample"])
    ]
    rows = [(k, *(f"{stats(v)[s]:,.0f}" for s in ("min", "median", "max"))) for k, v in rates.items()]
    rows.append(
        (
            "speed-up vs nn.LSTM defaults (per round)",
            *(f"{stats(speedup)[s]:.2f}" for s in ("min", "median", "max")),
        )
    )
    rows.append(
        (
            "16 samples / 1 sample (per round)",
            *(f"{stats(batch_gain)[s]:.2f}" for s in ("min", "median", "max")),
        )
    )
    rows.append(
        ("time to first character, ms", *(f"{stats(first)[s] * 1000:.1f}" for s in ("min", "median", "max")))
    )
    rows.append(
        ("chat: Enter to first character, ms", *(f"{stats(latency)[s] * 1000:.1f}" for s in ("min", "median", "max")))
    )
    rows += [(k, *(f"{stats(v)[s]:,.0f}" for s in ("min", "median", "max"))) for k, v in beam_rates.items()]
    print_table(
        f"generation, characters/s ({name} vocabulary, 2 x 512, CPU, {args.rounds} rounds)",
        rows,
        ("", "min", "median", "max"),
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "rates": {k: stats(v) for k, v in rates.items()},
            "speedup": stats(speedup),
            "batch_gain": stats(batch_gain),
            "first_char_s": stats(first),
            "chat_latency_s": stats(latency),
            "beam_tokens_per_s": {k: stats(v) for k, v in beam_rates.items()},
        },
    )


if __name__ == "__main__":
    main()
