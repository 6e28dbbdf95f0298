"""Data pipeline: char encoding speed end to end, and memory while training on huge files.

1. Speed. Builds a --size-mb file by repeating the corpus, then times, interleaved in one
   process: charlstm's two passes over a file (the tokenizer pass, which reads, checks and counts
   characters; the encoding pass, which reads, checks, encodes and writes the memory-mapped token
   file) and a per-character Python dict lookup (on the first 10 MB, scaled).
2. Memory. In a fresh subprocess per case: ``Trainer`` set-up (both passes) and --steps training
   steps, first on the corpus itself (what the model, optimizer and torch cost anyway), then on
   a --train-mb file (default 1 GB), and on a --line-mb file that is one single line (default
   50 MB; char, byte and bpe tokenizers). Reports the peak RSS added from just before the
   pipeline starts (VmHWM, reset after torch is imported) and, at the end, how much of the
   resident memory is anonymous (the process's own) and how much is file-backed (pages of the
   memory-mapped token file: page cache the kernel can drop at any time).

    python benchmarks/bench_data.py [--size-mb 100] [--train-mb 1000] [--line-mb 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import corpus_text, machine, print_table, stats, write_json  # noqa: E402

from charlstm.data.batches import encode_to_file
from charlstm.data.text import TextSource  # noqa: E402
from charlstm.data.tokenizers import CharTokenizer  # noqa: E402

_PROBE = """
import json, sys, time
import torch
from charlstm.config import ModelShape, TrainConfig
from charlstm.distributed import Dist
from charlstm.training.setup import prepare_new
from charlstm.data.text import TextSource
from charlstm.training.trainer import Trainer

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields

path, tokenizer, steps, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = TrainConfig(tokenizer=tokenizer, vocab_size=512, max_steps=steps, eval_every=steps, device="cpu")
# Linux keeps the peak-RSS mark across fork and exec: reset it, then read it before and after.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status()
start = time.perf_counter()
setup = prepare_new(TextSource.from_file(path), config, ModelShape(), out=out, dist=Dist())
trainer = Trainer(setup)
setup_s = time.perf_counter() - start
after_setup = status()
start = time.perf_counter()
trainer.run()
train_s = time.perf_counter() - start
end = status()
print(json.dumps({
    "tokens": setup.info.train_tokens + setup.info.val_tokens,
    "setup_s": setup_s, "train_s": train_s, "steps": trainer.step,
    "peak_added_mb": end["VmHWM"] - before["VmRSS"],
    "peak_added_after_setup_mb": after_setup["VmHWM"] - before["VmRSS"],
    "end_anon_added_mb": end["RssAnon"] - before["RssAnon"],
    "end_file_backed_mb": end["RssFile"] - before["RssFile"],
}))
"""


def _probe(path: Path, tokenizer: str, steps: int, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(path), tokenizer, str(steps), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def _repeat_to_file(path: Path, data: bytes, size_mb: int) -> int:
    with open(path, "wb") as f:
        for _ in range(size_mb * 1_000_000 // len(data) + 1):
            f.write(data)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-mb", type=int, default=1000, help="0 skips the large-file training probe")
    parser.add_argument("--line-mb", type=int, default=50, help="0 skips the single-line probes")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()

    text, name = corpus_text()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "big.txt"
        size = _repeat_to_file(path, text.encode(), args.size_mb)
        tok = CharTokenizer.train(text)

        def tokenizer_pass() -> float:
            start = time.perf_counter()
            CharTokenizer.train(TextSource.from_file(path).chunks())
            return time.perf_counter() - start

        def encoding_pass() -> float:
            start = time.perf_counter()
            encoded = encode_to_file(TextSource.from_file(path), tok, tmp / "ids.bin")
            assert len(encoded.ids) == len(text) * (size // len(text.encode()))
            return time.perf_counter() - start

        lookup = {c: i for i, c in enumerate(tok.chars)}

        def python_dict() -> float:
            start = time.perf_counter()
            sample = TextSource.from_file(path).read()[:10_000_000]
            [lookup.get(c, tok.unk_id) for c in sample]
            return len(sample.encode()) / 1e6 / (time.perf_counter() - start)

        rates: dict[str, list[float]] = {
            "tokenizer pass (read, check, count chars)": [],
            "encoding pass (read, check, encode, write ids)": [],
            "charlstm end to end (both passes)": [],
            "per-character Python dict": [],
        }
        for _ in range(args.rounds):
            a, b = tokenizer_pass(), encoding_pass()
            rates["tokenizer pass (read, check, count chars)"].append(size / 1e6 / a)
            rates["encoding pass (read, check, encode, write ids)"].append(size / 1e6 / b)
            rates["charlstm end to end (both passes)"].append(size / 1e6 / (a + b))
            rates["per-character Python dict"].append(python_dict())
        path.unlink()
        (tmp / "ids.bin").unlink()

        memory = {}
        small = tmp / "small.txt"
        small.write_text(text)
        memory[f"char, {name} itself ({len(text) / 1e6:.1f} MB), {args.steps} steps"] = _probe(
            small, "char", args.steps, tmp / "run-small"
        )
        if args.train_mb:
            big = tmp / "huge.txt"
            _repeat_to_file(big, text.encode(), args.train_mb)
            memory[f"char, {args.train_mb:,} MB file, {args.steps} steps"] = _probe(
                big, "char", args.steps, tmp / "run-huge"
            )
            big.unlink()
        if args.line_mb:
            line = tmp / "line.txt"
            _repeat_to_file(line, text.replace("\n", " ").encode(), args.line_mb)
            for kind in ("char", "byte", "bpe"):
                memory[f"{kind}, one {args.line_mb} MB line, 20 steps"] = _probe(
                    line, kind, 20, tmp / f"run-line-{kind}"
                )

    rows = [(k, *(f"{stats(v)[s]:,.0f}" for s in ("min", "median", "max"))) for k, v in rates.items()]
    print_table(
        f"char encoding, MB/s ({size / 1e6:,.0f} MB file of {name})", rows, ("", "min", "median", "max")
    )
    print()
    print_table(
        "memory while training (MB; file-backed = mapped token-file pages, reclaimable page cache)",
        [
            (
                case,
                f"{m['tokens']:,}",
                f"{m['setup_s']:.1f}",
                f"{m['peak_added_after_setup_mb']:,.0f}",
                f"{m['peak_added_mb']:,.0f}",
                f"{m['end_anon_added_mb']:,.0f}",
                f"{m['end_file_backed_mb']:,.0f}",
            )
            for case, m in memory.items()
        ],
        ("case", "tokens", "set-up s", "peak added: set-up", "peak added: end", "anon", "file-backed"),
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "size_bytes": size,
            "rates_mb_s": {k: stats(v) for k, v in rates.items()},
            "memory": memory,
        },
    )


if __name__ == "__main__":
    main()
