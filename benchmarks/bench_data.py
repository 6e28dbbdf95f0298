"""Data pipeline: char encoding of a large file, end to end (read, check, decode, encode).

Builds a file of --size-mb megabytes by repeating the corpus, then times, in one process:
charlstm (``read_text`` + ``CharTokenizer.encode``) and a per-character Python dict lookup (on
the first 10 MB, scaled). Peak memory of the charlstm path is measured in a fresh subprocess.

    python benchmarks/bench_data.py [--size-mb 100] [--rounds 3] [--json out.json]
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

from charlstm.corpus import read_text  # noqa: E402
from charlstm.tokenizers import CharTokenizer  # noqa: E402

# Linux keeps a process's peak-RSS mark across fork and exec, so the child would start at this
# (large) process's peak: reset it first (clear_refs "5"), then read VmHWM before and after.
_RSS_PROBE = """
import json, sys
from charlstm.corpus import read_text
from charlstm.tokenizers import CharTokenizer
def peak_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
tok = CharTokenizer(sys.argv[2])
tok.encode("warm up the lookup table")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = peak_kb()
ids = tok.encode(read_text(sys.argv[1]))
after = peak_kb()
print(json.dumps({"before_kb": before, "after_kb": after, "tokens": len(ids)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()

    text, name = corpus_text()
    tok = CharTokenizer.train(text)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        data = text.encode()
        with open(path, "wb") as f:
            for _ in range(args.size_mb * 1_000_000 // len(data) + 1):
                f.write(data)
        size = path.stat().st_size

        def charlstm() -> float:
            start = time.perf_counter()
            tok.encode(read_text(path))
            return size / 1e6 / (time.perf_counter() - start)

        lookup = {c: i for i, c in enumerate(tok.chars)}

        def python_dict() -> float:
            start = time.perf_counter()
            sample = read_text(path)[:10_000_000]
            [lookup.get(c, tok.unk_id) for c in sample]
            return len(sample.encode()) / 1e6 / (time.perf_counter() - start)

        rates = {"charlstm read + encode": [], "per-character Python dict": []}
        for _ in range(args.rounds):
            rates["charlstm read + encode"].append(charlstm())
            rates["per-character Python dict"].append(python_dict())
        probe = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE, str(path), tok.chars],
            capture_output=True,
            text=True,
            check=True,
        )
        rss = json.loads(probe.stdout)
    added_mb = (rss["after_kb"] - rss["before_kb"]) / 1024
    rows = [(k, *(f"{stats(v)[s]:,.0f}" for s in ("min", "median", "max"))) for k, v in rates.items()]
    rows.append(("peak RSS added by read + encode, MB", f"{added_mb:,.0f}", "", ""))
    print_table(
        f"char encoding, MB/s ({size / 1e6:,.0f} MB file of {name})", rows, ("", "min", "median", "max")
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "size_bytes": size,
            "rates_mb_s": {k: stats(v) for k, v in rates.items()},
            "rss_added_mb": added_mb,
        },
    )


if __name__ == "__main__":
    main()
