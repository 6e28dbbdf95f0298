"""The neural cache's fast product against the exact one, on a trained run and a text read after
its context (``eval --cache-size N --context TRAIN``'s cached pass, static weights).

    python3 benchmarks/bench_cache.py RUN TRAIN.txt TEXT.txt [--cache-size 150000] [--bytes 30000]

Both scores read the same context (its last ``--cache-size`` tokens, the last 4,096 of which
choose theta and lambda) and then the first ``--bytes`` of the text; the table gives bits per
byte, the difference and each pass's seconds. The exact product costs minutes per 100 KB on two
cores, hence the slice.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, print_table, write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("train", type=Path)
    parser.add_argument("text", type=Path)
    parser.add_argument("--cache-size", type=int, default=150_000)
    parser.add_argument("--bytes", type=int, default=30_000, help="The text's first BYTES are scored [30000].")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import math

    import charlstm
    from charlstm.config import CacheConfig
    from charlstm.evaluation.cache import cached_stream_loss

    lm = charlstm.load(args.run, device="cpu")
    text = args.text.read_bytes()[: args.bytes].decode("utf-8", "ignore")
    context = args.train.read_text(encoding="utf-8")
    context_ids = lm.tokenizer.encode(context)[-(args.cache_size + 256) :]
    ids = np.asarray(list(context_ids) + list(lm.tokenizer.encode(text)), dtype=np.int64)
    rows, results = [], {}
    for exact in (True, False):
        started = time.perf_counter()
        total, scored, cache = cached_stream_loss(
            lm.module, ids, CacheConfig(cache_size=args.cache_size), bptt=lm.info.bptt or 256, device="cpu",
            skip=len(context_ids), exact=exact,
        )
        seconds = time.perf_counter() - started
        bpb = total / math.log(2) / len(text.encode())
        name = "exact" if exact else "fast"
        results[name] = {"bits_per_byte": bpb, "seconds": round(seconds, 1), "theta": cache.theta,
                         "lambda": cache.lambda_, "fast_segments": cache.fast_segments, "tokens": scored}
        rows.append((name, f"{bpb:.4f}", f"{seconds:.1f}", f"{cache.theta:g}", f"{cache.lambda_:g}", str(cache.fast_segments)))
    difference = results["fast"]["bits_per_byte"] - results["exact"]["bits_per_byte"]
    rows.append(("fast - exact", f"{difference:+.4f}", f"x{results['exact']['seconds'] / results['fast']['seconds']:.1f}", "", "", ""))
    print_table(f"{args.text.name}: first {len(text.encode()):,} bytes, cache {args.cache_size:,}",
                rows, ("product", "bits/byte", "seconds", "theta", "lambda", "fast segments"))
    write_json(args.json, {"results": results, "difference": difference, "machine": machine(), "args": vars(args) | {
        "train": str(args.train), "text": str(args.text)}})


if __name__ == "__main__":
    main()
