"""The neural cache's fast product against the exact one, on a trained run and a text read after
its context (``eval --cache-size N --context TRAIN``'s cached pass, static weights).

    python3 benchmarks/bench_cache.py RUN TRAIN.txt TEXT.txt [--cache-size 150000] [--bytes 30000]
        [--kinds exact,int8,bf16,fp32]

Every score reads the same context (its last ``--cache-size`` tokens, the last 4,096 of which
choose theta and lambda) and then the first ``--bytes`` of the text. ``--kinds``: the exact
float32 product, and the fast product with the ring held as int8 (oneDNN's quantised product,
the CPU's default), bf16 (a GPU's; on a CPU only where it has bf16 hardware) or fp32
(``evaluation/ring.py``). The table gives bits per byte, each fast kind's difference from the
first kind listed and each pass's seconds. The exact product costs minutes per 100 KB on two
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
    parser.add_argument("--kinds", default="exact,int8,bf16,fp32", help="Products to compare [exact,int8,bf16,fp32].")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import math

    import charlstm
    from charlstm.config import CacheConfig
    from charlstm.evaluation import cache as cache_module
    from charlstm.evaluation.cache import cached_stream_loss

    lm = charlstm.load(args.run, device="cpu")
    text = args.text.read_bytes()[: args.bytes].decode("utf-8", "ignore")
    context = args.train.read_text(encoding="utf-8")
    context_ids = lm.tokenizer.encode(context)[-(args.cache_size + 256) :]
    ids = np.asarray(list(context_ids) + list(lm.tokenizer.encode(text)), dtype=np.int64)
    rows, results = [], {}
    kinds = args.kinds.split(",")
    for kind in kinds:
        cache_module.fast_kind = lambda device, kind=kind: kind  # noqa: E731 (the kind under test)
        started = time.perf_counter()
        total, scored, cache = cached_stream_loss(
            lm.module, ids, CacheConfig(cache_size=args.cache_size), bptt=lm.info.bptt or 256, device="cpu",
            skip=len(context_ids), exact=kind == "exact",
        )
        seconds = time.perf_counter() - started
        bpb = total / math.log(2) / len(text.encode())
        results[kind] = {"bits_per_byte": bpb, "seconds": round(seconds, 1), "theta": cache.theta,
                         "lambda": cache.lambda_, "fast_segments": cache.fast_segments, "tokens": scored}
        rows.append((kind, f"{bpb:.4f}", f"{bpb - results[kinds[0]]['bits_per_byte']:+.4f}", f"{seconds:.1f}",
                     f"{cache.theta:g}", f"{cache.lambda_:g}", str(cache.fast_segments)))
    print_table(f"{args.text.name}: first {len(text.encode()):,} bytes, cache {args.cache_size:,}",
                rows, ("product", "bits/byte", f"- {kinds[0]}", "seconds", "theta", "lambda", "fast segments"))
    write_json(args.json, {"results": results, "machine": machine(), "args": vars(args) | {
        "train": str(args.train), "text": str(args.text)}})


if __name__ == "__main__":
    main()
