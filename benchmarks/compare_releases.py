"""Batch-1 and 64-stream generation of whichever charlstm is first on the path, old layout or
new: run it once per release, on the same checkpoint, to compare releases side by side.

    PYTHONPATH=OLD_CHECKOUT OMP_NUM_THREADS=1 python3 benchmarks/compare_releases.py RUN [WEIGHTS]
    PYTHONPATH=. OMP_NUM_THREADS=1 python3 benchmarks/compare_releases.py RUN [WEIGHTS]

WEIGHTS: fp32 (default), int8 or bf16 (``--weights``; releases before it have only fp32).
"""
import sys, time, statistics, torch
try:
    from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.generation.sampling import generate
    which = "new"
except ImportError:
    from charlstm.checkpoint import load_checkpoint, model_from_checkpoint
    from charlstm.sampling import generate
    which = "old"
from charlstm.config import SampleConfig
p = load_checkpoint(sys.argv[1])
model, tok = model_from_checkpoint(p, "cpu", sys.argv[1])
weights = sys.argv[2] if len(sys.argv) > 2 else "fp32"
def rate(n, length):
    extra = {} if weights == "fp32" else {"weights": weights}
    cfg = SampleConfig(prime="ROMEO:", length=length, num_samples=n, seed=1, temperature=0.8, **extra)
    t = time.perf_counter()
    g = generate(model, tok, cfg, torch.device("cpu"))
    chars = sum(len(s) for pieces in g for s in pieces)
    return chars / (time.perf_counter() - t)
rate(1, 200); rate(64, 50)
one = statistics.median(rate(1, 4000) for _ in range(5))
many = statistics.median(rate(64, 1000) for _ in range(3))
print(f"{which} {weights}: batch 1 {one:,.0f} chars/s; 64 streams {many:,.0f} chars/s ({many/one:.1f}x one stream)")
