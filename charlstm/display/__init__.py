"""All rendering: progress bars, tables, coloured text, the inspect page and plots, one module
per kind of picture (``consoles``, ``training``, ``reports``, ``activations``, ``charts``,
``long_range``).

The library computes; this package shows. Only it and ``cli`` know rich and tqdm (both
imported inside functions, so ``charlstm --help`` stays fast). Progress and tables for people go
to stderr; results (samples, ``eval``'s table, ``inspect``'s pictures) go to stdout.
"""

from charlstm.display.activations import (
    colour,
    describe_saturation,
    inspection_html,
    inspection_png,
    print_inspection,
    scale_of,
)
from charlstm.display.charts import block_chart, plot_runs, print_curves
from charlstm.display.consoles import duration, one_line, stderr_console, stdout_console, visible
from charlstm.display.reports import print_compressed, print_eval_report, print_runs, print_scores, token_progress
from charlstm.display.training import TrainBar, TrainProgress

__all__ = [
    "TrainBar",
    "TrainProgress",
    "block_chart",
    "colour",
    "describe_saturation",
    "duration",
    "inspection_html",
    "inspection_png",
    "one_line",
    "plot_runs",
    "print_compressed",
    "print_curves",
    "print_eval_report",
    "print_inspection",
    "print_runs",
    "print_scores",
    "scale_of",
    "stderr_console",
    "stdout_console",
    "token_progress",
    "visible",
]
