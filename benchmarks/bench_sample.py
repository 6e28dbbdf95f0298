"""Generation speed: charlstm's sampler against plain PyTorch loops and the product floor, side by side.

Batch 1, the default model (1 x 512, embedding 64; ``--shape reference`` for 2 x 512, embedding
128), tokens after a warm start, CPU, untrained weights (speed does not depend on them).
Contenders, alternating round by round in one process so that drift hits all alike:

- charlstm ``generate``, the whole path (sampling and text decoding included), with fp32, int8
  and bf16 recurrent weights (``--weights``);
- plain loops, one token per call then softmax + multinomial: nn.Embedding -> nn.LSTM ->
  nn.Linear with oneDNN on (PyTorch's default) and off, and the same with ``torch.lstm_cell``;
- the floor: the one product per token that reads the recurrent weights, ``torch.addmm`` of
  (1 x E+H) by (E+H x 4H) in fp32, alone.

Then: 1/4/16/64 streams (``num_samples``; characters per second of all samples together, and
against one), what int8/bf16 cost in held-out loss (nats per character, charlstm's evaluate, on
a model trained here for ``--train-seconds`` or given with ``--checkpoint``), time to first
character, ``chat``'s Enter-to-first-character latency and beam search throughput.

    python benchmarks/bench_sample.py [--rounds 5] [--length 4000] [--json out.json]
    python benchmarks/bench_sample.py --quick       # seconds: the test suite runs this
"""

from __future__ import annotations

import argparse
import re
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import REFERENCE, corpus_text, interleave, machine, print_table, stats, write_json  # noqa: E402

from charlstm.config import CELLS, WEIGHTS, ModelConfig, ModelShape, SampleConfig, TrainConfig  # noqa: E402
from charlstm.data.tokenizers import CharTokenizer  # noqa: E402
from charlstm.evaluation.evaluate import evaluate_text  # noqa: E402
from charlstm.generation.beam import beam_search  # noqa: E402
from charlstm.generation.chat import ChatSession  # noqa: E402
from charlstm.generation.sampling import generate  # noqa: E402
from charlstm.model import LanguageModel  # noqa: E402
from charlstm.stepper import with_weights  # noqa: E402

DEFAULT = ModelShape()  # 1 x 512, embedding 64
SHAPES = {
    "default": (DEFAULT.embedding_dim, DEFAULT.hidden_size, DEFAULT.num_layers),
    "reference": (REFERENCE["embedding_dim"], REFERENCE["hidden_size"], REFERENCE["num_layers"]),
    "tiny": (16, 64, 1),  # --quick
}
STREAMS = (1, 4, 16, 64)


def reference_model(vocab_size: int, device: str = "cpu", shape: str = "reference", cell: str = "lstm",
                    hidden_size: int | None = None) -> LanguageModel:
    """An untrained model of the reference shape (speed does not depend on the weights), of
    ``cell`` and, given, ``hidden_size``."""
    torch.manual_seed(0)
    embedding_dim, default_hidden, num_layers = SHAPES[shape]
    config = ModelConfig(
        vocab_size=vocab_size, embedding_dim=embedding_dim, hidden_size=hidden_size or default_hidden,
        num_layers=num_layers, cell=cell,
    )
    return LanguageModel(config).to(device).eval()


def generate_rate(
    model, tokenizer, num_samples: int, length: int, device: str = "cpu", weights: str = "fp32", prime: str = "\n",
    regex: str | None = None,
) -> float:
    """Characters per second (all samples together) of charlstm's ``generate``: ``num_samples``
    samples of ``length`` characters in one batch, text decoding included; the prime is read
    (and a ``regex`` compiled) before the clock starts."""
    config = SampleConfig(
        prime=prime, length=length, num_samples=num_samples, seed=1, temperature=1.0, weights=weights, regex=regex
    )
    run = generate(model, tokenizer, config, device)
    next(run)  # reads the prime and writes the first token, untimed
    start = time.perf_counter()
    chars = sum(len(p) for pieces in run for p in pieces)
    return chars / (time.perf_counter() - start)


def plain_loop_rate(model, length: int, kind: str) -> float:
    """Tokens per second of a straightforward sampler: one call per token, softmax + multinomial."""
    rnn, head, embedding = model.rnn, model.head, model.embedding
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = kind != "nn.LSTM, oneDNN off"
    try:
        with torch.inference_mode():
            g = torch.Generator().manual_seed(1)
            x = torch.zeros(1, dtype=torch.long)
            if kind == "torch.lstm_cell":
                if rnn.num_layers != 1 or model.config.cell != "lstm":
                    return math.nan
                weights = [p.detach() for p in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)]
                h = c = torch.zeros(1, rnn.hidden_size)
                start = time.perf_counter()
                for _ in range(length):
                    h, c = torch.lstm_cell(embedding(x), (h, c), *weights)
                    x = torch.multinomial(head(h).softmax(-1), 1, generator=g).view(1)
            else:
                state = None
                start = time.perf_counter()
                for _ in range(length):
                    out, state = rnn(embedding(x.view(1, 1)), state)
                    x = torch.multinomial(head(out[0]).softmax(-1), 1, generator=g).view(1)
            return length / (time.perf_counter() - start)
    finally:
        torch.backends.mkldnn.enabled = previous


def floor_rate(model, length: int) -> float:
    """Products per second of (1 x E+H) @ (E+H x 4H) in fp32: the weights a step must read."""
    rnn = model.rnn
    inputs = rnn.input_size + rnn.hidden_size
    weight = torch.randn(inputs, 4 * rnn.hidden_size)
    bias, x = torch.randn(4 * rnn.hidden_size), torch.randn(1, inputs)
    out = torch.empty(1, 4 * rnn.hidden_size)
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(length):
            torch.addmm(bias, x, weight, out=out)
        return length / (time.perf_counter() - start)


def trained_model(args, text: str):
    """The model whose loss the lighter weights are measured on, and its tokenizer."""
    from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint

    if args.checkpoint:
        return model_from_checkpoint(load_checkpoint(args.checkpoint))
    from charlstm.data.text import TextSource
    from charlstm.training.trainer import train

    embedding_dim, hidden_size, num_layers = SHAPES[args.shape]
    shape = ModelShape(embedding_dim=embedding_dim, hidden_size=args.hidden_size or hidden_size, num_layers=num_layers,
                       cell=args.cell)
    config = TrainConfig(device="cpu", seed=1, max_time=args.train_seconds, max_steps=args.train_steps)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(TextSource.from_text(text, "bench", "bench"), config, shape, out=Path(tmp) / "run")
        return model_from_checkpoint(load_checkpoint(result.run_dir))


def weight_losses(args, text: str) -> dict[str, dict]:
    """Held-out loss (nats per character) with each kind of weights, and its cost against fp32."""
    model, tok = trained_model(args, text[: int(len(text) * 0.9)])
    held_out = text[int(len(text) * 0.9) :][: args.eval_chars]
    found = {}
    for weights in WEIGHTS:
        report = evaluate_text(with_weights(model, weights), tok, held_out, batch_size=16, bptt=64, device="cpu")
        found[weights] = {"loss_nats_per_char": report.loss * report.tokens / report.chars}
    for weights in WEIGHTS:
        found[weights]["cost_nats_per_char"] = found[weights]["loss_nats_per_char"] - found["fp32"]["loss_nats_per_char"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--length", type=int, default=4000, help="tokens per timed block")
    parser.add_argument("--shape", choices=("default", "reference"), default="default")
    parser.add_argument("--cell", choices=CELLS, default="lstm",
                        help="the cell (ln-lstm: the plain loops call its layer, LNLSTM, per token)")
    parser.add_argument("--hidden-size", type=int, help="instead of the shape's")
    parser.add_argument("--checkpoint", help="measure the weights' loss on this model instead of training one")
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--eval-chars", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="a tiny model and short runs (the test suite)")
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.length, args.shape = 2, 200, "tiny"
        args.train_seconds, args.train_steps, args.eval_chars = 5.0, 20, 3000

    text, name = corpus_text()
    tok = CharTokenizer.train(text)
    model = reference_model(tok.vocab_size, shape=args.shape, cell=args.cell, hidden_size=args.hidden_size)
    warm = text[:200]  # a warm start: the prime is read before the clock starts
    length = args.length

    contenders = {f"charlstm generate, {w}": (lambda w=w: generate_rate(model, tok, 1, length, weights=w, prime=warm)) for w in WEIGHTS}
    try:  # a pattern no prefix of which ends it: every token drawn under a mask of the letters it allows
        import outlines_core  # noqa: F401

        allowed = "".join(c for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;:!?'\n-" if c in tok.chars)
        pattern = f"[{re.escape(allowed)}]{{{length}}}"
        contenders["charlstm generate, fp32, --regex (letters and punctuation)"] = lambda: generate_rate(
            model, tok, 1, length, prime=warm, regex=pattern
        )
    except ImportError:
        print("outlines-core is not installed: no --regex row", file=sys.stderr)
    for kind in ("nn.LSTM, oneDNN on (default)", "nn.LSTM, oneDNN off", "torch.lstm_cell"):
        contenders[f"plain loop, {kind}"] = lambda kind=kind: plain_loop_rate(model, length, kind)
    contenders["floor: addmm (1 x E+H) @ (E+H x 4H), fp32"] = lambda: floor_rate(model, length)
    for run in contenders.values():  # warm-up
        run()
    rates = interleave(contenders, args.rounds)

    stream_contenders = {
        f"{n} streams, {w}": (lambda n=n, w=w: generate_rate(model, tok, n, max(50, length // n), weights=w, prime=warm))
        for w in ("fp32", "int8")
        for n in STREAMS
    }
    for run in stream_contenders.values():
        run()
    streams = interleave(stream_contenders, args.rounds)

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
            ids, _ = beam_search(model, tok, prime_ids, min(200, length), width, "cpu")
            runs.append(len(ids) / (time.perf_counter() - start))
        beam_rates[f"beam search, width {width}, tokens/s"] = runs

    losses = weight_losses(args, text)

    embedding_dim, hidden_size, num_layers = SHAPES[args.shape]
    hidden_size = args.hidden_size or hidden_size
    fmt = lambda v, s: f"{stats(v)[s]:,.0f}"  # noqa: E731
    base = rates["charlstm generate, fp32"]
    rows = [(k, *(fmt(v, s) for s in ("min", "median", "max")), f"{stats(v)['median'] / stats(base)['median']:.2f}") for k, v in rates.items()]
    print_table(
        f"batch 1, tokens/s ({name} vocabulary, {num_layers} x {hidden_size} {args.cell}, embedding {embedding_dim}, "
        f"{length} tokens after a 200-token warm start, {args.rounds} rounds, {torch.get_num_threads()} threads)",
        rows,
        ("", "min", "median", "max", "vs charlstm fp32"),
    )
    one = {w: stats(streams[f"1 streams, {w}"])["median"] for w in ("fp32", "int8")}
    rows = [
        (k, *(fmt(v, s) for s in ("min", "median", "max")), f"{stats(v)['median'] / one[k.split(', ')[1]]:.1f}")
        for k, v in streams.items()
    ]
    print_table("many streams, characters/s of all samples together", rows, ("", "min", "median", "max", "vs 1 stream"))
    rows = [
        (w, f"{stats(rates[f'charlstm generate, {w}'])['median']:,.0f}",
         f"{v['loss_nats_per_char']:.4f}", f"{v['cost_nats_per_char']:+.4f}")
        for w, v in losses.items()
    ]
    source = args.checkpoint or f"trained here for {args.train_seconds:g} s"
    print_table(f"weights: speed and held-out loss ({source}, {args.eval_chars:,} held-out characters)", rows,
                ("weights", "tokens/s (median)", "nats/char", "vs fp32"))
    rows = [
        ("time to first character, ms", *(f"{stats(first)[s] * 1000:.1f}" for s in ("min", "median", "max"))),
        ("chat: Enter to first character, ms", *(f"{stats(latency)[s] * 1000:.1f}" for s in ("min", "median", "max"))),
    ]
    rows += [(k, *(fmt(v, s) for s in ("min", "median", "max"))) for k, v in beam_rates.items()]
    print_table("latency and beam search", rows, ("", "min", "median", "max"))
    write_json(
        args.json,
        {
            "machine": machine(),
            "shape": args.shape,
            "cell": args.cell,
            "hidden_size": hidden_size,
            "length": length,
            "rates": {k: stats(v) for k, v in rates.items()},
            "streams": {k: stats(v) for k, v in streams.items()},
            "weights": losses,
            "first_char_s": stats(first),
            "chat_latency_s": stats(latency),
            "beam_tokens_per_s": {k: stats(v) for k, v in beam_rates.items()},
        },
    )


if __name__ == "__main__":
    main()
