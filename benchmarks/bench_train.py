"""Training throughput: charlstm's real training step against a bare PyTorch loop, side by side.

charlstm's step is ``Trainer.train_step``: its data pipeline (windows of the (T, B) stream), the
carried and detached hidden state, gradient-norm clipping, the learning-rate schedule and AdamW.
The bare loop is nn.Embedding -> nn.LSTM -> nn.Linear with AdamW on random windows of the same
shape, nothing else, in the same precision (``--precision fp32``, or ``bf16``: both under bf16
autocast). The two alternate block by block in one process; the ratio is taken per round.
Evaluation speed (charlstm's ``stream_loss``, inference mode) is measured in the same run.

    python benchmarks/bench_train.py [--rounds 5] [--steps 3] [--precision fp32|bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _common import REFERENCE, corpus_text, interleave, machine, print_table, stats, timed, write_json  # noqa: E402

from charlstm.config import ModelShape, TrainConfig  # noqa: E402
from charlstm.distributed import Dist  # noqa: E402
from charlstm.evaluation.evaluate import stream_loss  # noqa: E402
from charlstm.training.setup import prepare_new  # noqa: E402
from charlstm.data.text import TextSource  # noqa: E402
from charlstm.training.trainer import Trainer  # noqa: E402


class Bare(torch.nn.Module):
    def __init__(self, v, e, h, layers):
        super().__init__()
        self.emb, self.lstm, self.head = (
            torch.nn.Embedding(v, e),
            torch.nn.LSTM(e, h, layers),
            torch.nn.Linear(h, v),
        )

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.head(out)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def charlstm_step(text: str, name: str, shape: dict, precision: str = "fp32", device: str = "cpu",
                  dropout: float = 0.0):
    """charlstm's real training step at ``shape`` (``REFERENCE``'s keys): returns ``(step, setup)``,
    where each ``step()`` is one ``Trainer.train_step`` on the next window of ``text``, the hidden
    state carried from one to the next, in ``precision`` (fp16: the trainer's GradScaler)."""
    config = TrainConfig(batch_size=shape["batch_size"], bptt=shape["bptt"], device=device, seed=0,
                         max_time=1e9, precision=precision)
    model_shape = ModelShape(
        embedding_dim=shape["embedding_dim"],
        hidden_size=shape["hidden_size"],
        num_layers=shape["num_layers"],
        dropout=dropout,
    )
    with tempfile.TemporaryDirectory() as tmp:
        setup = prepare_new(TextSource.from_text(text, name, "bench"), config, model_shape, out=Path(tmp) / "run", dist=Dist())
        trainer = Trainer(setup)
    windows = setup.data.windows
    position = {"i": 0, "state": None}

    def step() -> None:
        window = windows[position["i"] % len(windows)]
        position["state"] = trainer.train_step(window, position["state"])
        position["i"] += 1

    return step, setup


def bare_step(vocab: int, shape: dict, precision: str = "fp32", device: str = "cpu"):
    """One step of the bare loop (``Bare`` + AdamW on a fixed random window of ``shape``), in
    ``precision``: bf16/fp16 autocast, fp16 with a GradScaler, as a plain PyTorch loop does it."""
    B, T = shape["batch_size"], shape["bptt"]
    torch.manual_seed(0)
    bare = Bare(vocab, shape["embedding_dim"], shape["hidden_size"], shape["num_layers"]).to(device)
    opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    x = torch.randint(0, vocab, (T + 1, B), device=device)
    dtype = AMP_DTYPES.get(precision)
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type, enabled=precision == "fp16")

    def step() -> None:
        with torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = bare(x[:-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[1:].flatten())
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed block")
    parser.add_argument("--hidden-size", type=int, default=REFERENCE["hidden_size"])
    parser.add_argument(
        "--dropout", type=float, default=0.0, help="charlstm's dropout (the bare loop has none)"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="for both contenders")
    parser.add_argument("--json")
    args = parser.parse_args()
    shape = dict(REFERENCE, hidden_size=args.hidden_size)
    B, T = shape["batch_size"], shape["bptt"]

    text, name = corpus_text()
    step, setup = charlstm_step(text, name, shape, args.precision, "cpu", args.dropout)
    vocab = setup.tokenizer.vocab_size
    bare = bare_step(vocab, shape, args.precision, "cpu")

    def charlstm_block():
        for _ in range(args.steps):
            step()

    def bare_block():
        for _ in range(args.steps):
            bare()

    val = setup.data.val_ids

    def eval_block():
        stream_loss(setup.model, val, batch_size=256, bptt=T, device="cpu", precision=setup.precision)

    tokens = args.steps * B * T
    charlstm_block(), bare_block()  # warm-up
    rates = interleave(
        {
            "charlstm train step": lambda: timed(charlstm_block, tokens),
            "bare nn.LSTM loop": lambda: timed(bare_block, tokens),
            "charlstm eval (stream_loss, 256 streams)": lambda: timed(eval_block, len(val)),
        },
        args.rounds,
    )
    ratio = [a / b for a, b in zip(rates["charlstm train step"], rates["bare nn.LSTM loop"])]
    eval_ratio = [
        a / b for a, b in zip(rates["charlstm eval (stream_loss, 256 streams)"], rates["charlstm train step"])
    ]
    rows = [
        (k, f"{stats(v)['min']:,.0f}", f"{stats(v)['median']:,.0f}", f"{stats(v)['max']:,.0f}")
        for k, v in rates.items()
    ]
    rows.append(
        ("ratio charlstm / bare (per round)", *(f"{stats(ratio)[k]:.3f}" for k in ("min", "median", "max")))
    )
    rows.append(
        ("ratio eval / train (per round)", *(f"{stats(eval_ratio)[k]:.2f}" for k in ("min", "median", "max")))
    )
    title = f"training throughput, tokens/s ({name}, vocab {vocab}, {shape}, charlstm dropout {args.dropout}, {args.precision}, {args.rounds} rounds)"
    print_table(title, rows, ("", "min", "median", "max"))
    write_json(
        args.json,
        {
            "shape": shape,
            "dropout": args.dropout,
            "precision": args.precision,
            "machine": machine(),
            "rates": {k: stats(v) for k, v in rates.items()},
            "ratio": stats(ratio),
            "eval_ratio": stats(eval_ratio),
        },
    )


if __name__ == "__main__":
    main()
