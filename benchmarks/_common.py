"""Shared helpers: side-by-side timing, summary statistics, the machine, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# The reference shape of benchmarks/README.md: tinyshakespeare's 65 characters, embedding 128,
# 2 layers x 512 hidden, batch 64, bptt 128.
REFERENCE = {
    "vocab_size": 65,
    "embedding_dim": 128,
    "hidden_size": 512,
    "num_layers": 2,
    "batch_size": 64,
    "bptt": 128,
}


def corpus_text() -> tuple[str, str]:
    """tinyshakespeare when the test data has it, else the built-in corpus."""
    path = SHARED_DATA / "tinyshakespeare.txt"
    if path.is_file():
        return path.read_text(), "tinyshakespeare"
    from charlstm.data.text import builtin_text

    return builtin_text(), "built-in corpus"


def machine() -> dict:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags"))
        isa = sorted({f for f in flags.split() if f.startswith(("avx512", "amx", "avx2"))})
    except (OSError, StopIteration):
        isa = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "isa": isa,
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "n": len(values)}


def interleave(contenders: dict, rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, in turn, so drift on a shared machine hits all alike.

    A contender is a function returning a rate (units per second) for one timed block.
    """
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            rates[name].append(run())
    return rates


def timed(fn, units: float) -> float:
    start = time.perf_counter()
    fn()
    return units / (time.perf_counter() - start)


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))


def write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2) + "\n")
        print(f"\nwrote {path}")


def charlstm(args: list, log: list[str]) -> str:
    """Run one charlstm command in this process (as the command line would) and keep it in ``log``;
    returns what it wrote on stdout."""
    import contextlib
    import io
    import shlex

    from charlstm.cli import cli

    log.append("charlstm " + " ".join(shlex.quote(str(a)) for a in args))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            cli.main([str(a) for a in args], prog_name="charlstm", standalone_mode=False)
        except SystemExit as e:
            if e.code:
                raise
    return out.getvalue()
