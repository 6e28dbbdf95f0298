"""What the fuzz harnesses share: the command line (short or long mode) and the one invariant.

Every harness feeds fuzzer-made input to a charlstm loader; each input must end in a result or in
one ``CharlstmError`` subclass: any other exception, a crash or a hang (libFuzzer's -timeout) is a
finding, and libFuzzer stops there and saves the input as ``crash-*`` / ``timeout-*``.

    python -m tests.fuzz.fuzz_checkpoint --short          # a few hundred inputs: seconds
    python -m tests.fuzz.fuzz_checkpoint --long 180       # 3 minutes; reports executions
    python -m tests.fuzz.fuzz_checkpoint crash-1234       # replay one input
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

SHORT_RUNS = 300


def main(test_one_input, short_runs: int = SHORT_RUNS) -> None:
    import atheris

    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true", help=f"{short_runs} inputs from a fixed seed")
    parser.add_argument("--long", type=float, metavar="SECONDS", help="fuzz for this long")
    parser.add_argument("inputs", nargs="*", help="replay these inputs (files) instead of fuzzing")
    args, rest = parser.parse_known_args()
    flags = ["-timeout=30", "-rss_limit_mb=6144", "-print_final_stats=1"]
    out = os.environ.get("CHARLSTM_FUZZ_ARTIFACTS", tempfile.gettempdir())
    os.makedirs(out, exist_ok=True)
    flags.append(f"-artifact_prefix={out.rstrip('/')}/")
    if args.short:
        flags += [f"-runs={short_runs}", "-seed=1"]
    elif args.long:
        # Inputs up to 1 KB from the start: each byte steers a structured mutation, so libFuzzer's
        # usual slow growth from 4-byte inputs would keep them shallow for minutes.
        flags += [f"-max_total_time={int(args.long)}", "-max_len=1024", "-len_control=0"]
    atheris.Setup([sys.argv[0], *flags, *rest, *args.inputs], test_one_input)
    atheris.Fuzz()
