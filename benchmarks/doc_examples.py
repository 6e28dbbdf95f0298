"""The outputs shown on docs/generating.md, made again from the current version: runs each
command of the page's sample block on RUN (the page names how RUN was trained) and prints the
block to paste in.

    python benchmarks/doc_examples.py RUN
"""

from __future__ import annotations

import shlex
import subprocess
import sys

COMMANDS = [
    'sample run --prime "KING HENRY:" --length 200 --seed 3 --temperature 0.6 --temperature 1.0',
    'sample run --prime "KING HENRY:" --length 60 --beam-width 8',
    'sample run --prime "KING HENRY:" --length 60 --seed 3 --no-repeat-ngram 10 --min-p 0.05 --json',
    'sample run --prime "Name: " --regex "[A-Z][a-z]{2,8} [A-Z][a-z]{2,8}" --num-samples 3 --seed 1 --no-echo-prime',
]


def main() -> None:
    run = sys.argv[1]
    out = ["```"]
    for command in COMMANDS:
        args = [a if a != "run" else run for a in shlex.split(command)]
        done = subprocess.run([sys.executable, "-m", "charlstm", *args], capture_output=True, text=True, check=True)
        out.append(f"$ charlstm {command}")
        out.append(done.stdout.rstrip("\n"))
    out.append("```")
    print("\n".join(out))


if __name__ == "__main__":
    main()
