"""The command-line interface: Click commands, one module per group of them.

Each command turns its options into a config object, makes one library call and hands the
result to ``charlstm.display``; errors become one line on stderr (``base``). torch is imported
only inside commands, so ``charlstm --help`` stays fast.

    base        the ``charlstm`` group, error handling, shared option decorators
    training    train, demo
    generation  sample, score
    chat        chat
    measuring   eval, inspect, experiment
    reports     info, plot
    serve       serve
    export      export
    compress    compress, decompress
"""

from charlstm.cli import chat, generation, measuring, reports, serve, training  # noqa: F401  (they add the commands)
from charlstm.cli import export  # noqa: F401  (charlstm export)
from charlstm.cli import compress  # noqa: F401  (charlstm compress, decompress)
from charlstm.cli.base import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="charlstm")
