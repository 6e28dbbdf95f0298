"""Tables of results: ``eval``'s report, ``score``'s lines, ``info``'s runs and ``.clstm`` files (stdout)."""

from __future__ import annotations

import sys
from contextlib import contextmanager

from charlstm.display.consoles import duration, one_line, stdout_console


def print_eval_report(report, name: str) -> None:
    from rich.table import Table

    table = Table(title="charlstm eval", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("text", name)
    table.add_row("tokens", f"{report.tokens:,}")
    table.add_row("characters", f"{report.chars:,}")
    table.add_row("bytes", f"{report.bytes:,}")
    table.add_row("loss (nats/token)", f"{report.loss:.4f}")
    table.add_row("perplexity (per token)", f"{report.perplexity:.3f}")
    table.add_row("bits per character", f"{report.bits_per_char:.4f}")
    table.add_row("bits per byte", f"{report.bits_per_byte:.4f}")
    table.add_row("unknown characters", f"{report.unknown:,}")
    if report.replacements:
        table.add_row("invalid UTF-8 replaced", f"{report.replacements:,}")
    if report.context_tokens:
        table.add_row("context read first (not scored)", f"{report.context_tokens:,} tokens")
    adapted = report.adapted
    if adapted is not None:
        table.add_row("static scoring time", f"{report.seconds:.1f} s")
        table.add_row(
            f"adapted loss ({adapted.adapt_method}, lr {_tuned(adapted.adapt_lr, adapted.tuned_lr)}, "
            f"decay {_tuned(adapted.adapt_decay, adapted.tuned_decay)}, bptt {adapted.adapt_bptt}, "
            f"depth {adapted.adapt_depth}" + (f", prior {adapted.adapt_prior}" if adapted.adapt_prior else "") + ")",
            f"{adapted.loss:.4f}",
        )
        table.add_row("adapted bits per character", f"{adapted.bits_per_char:.4f}")
        table.add_row("adapted bits per byte", f"{adapted.bits_per_byte:.4f}")
        table.add_row("gain (bits per character)", f"{report.bits_per_char - adapted.bits_per_char:.4f}")
        table.add_row("adapting time", f"{adapted.seconds:.1f} s")
    if adapted is None and report.cached is not None:
        table.add_row("static scoring time", f"{report.seconds:.1f} s")
    for label, cached in (("cache", report.cached), ("adapted + cache", adapted and adapted.cached)):
        if cached is not None:
            table.add_row(
                f"{label} bits per byte (size {cached.cache_size}, theta {cached.cache_theta:g}, "
                f"lambda {cached.cache_lambda:g})",
                f"{cached.bits_per_byte:.4f}",
            )
    if report.cached is not None:
        table.add_row("cache time", f"{report.cached.seconds:.1f} s")
    stdout_console().print(table)


def _tuned(start: float, end: float | None) -> str:
    """A setting --adapt-tune moved, as "start -> end"."""
    return f"{start:g}" if end is None or end == start else f"{start:g} -> {end:.2g}"


@contextmanager
def token_progress(description: str, enabled: bool = True):
    """A progress bar on stderr counting tokens (shown only on a terminal); yields the callback
    the library calls with each step's token count, or None when ``enabled`` is false."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    with tqdm(desc=description, unit="tok", unit_scale=True, file=sys.stderr, disable=None, leave=False) as bar:
        yield bar.update


def print_scores(results, as_json: bool) -> None:
    """``charlstm score``: one line per input line, in order (JSON lines with --json)."""
    import json

    if as_json:
        for r in results:
            sys.stdout.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
        return
    sys.stdout.write(f"{'logprob':>10}  {'bits/char':>9}  text\n")
    for r in results:
        bits = "-" if r.tokens == 0 else f"{r.bits_per_char:9.4f}"
        sys.stdout.write(f"{r.logprob:10.3f}  {bits:>9}  {r.text}\n")


def print_runs(summaries) -> None:
    """``charlstm info``: one row per run on a wide terminal (one table per run on a narrow one),
    then the command line each was started with, and each it was resumed with."""
    from rich.table import Table

    console = stdout_console()
    columns = (
        "run",
        "status",
        "model",
        "tokenizer",
        "data",
        "steps",
        "time",
        "best val",
        "bits/char",
        "last sample",
    )
    numbers = ("steps", "time", "best val", "bits/char")
    rows = [_run_row(s) for s in summaries]
    if console.width >= 140:
        table = Table(title="charlstm info", title_justify="left")
        for column in columns:  # figures are never cut; words fold onto more lines when space is short
            if column in numbers:
                table.add_column(column, justify="right", no_wrap=True)
            else:
                table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    else:
        for row in rows:
            table = Table(title=f"charlstm info {row[0]}", show_header=False, title_justify="left")
            table.add_column(style="bold", no_wrap=True)
            table.add_column(overflow="fold")
            for column, value in zip(columns[1:], row[1:]):
                table.add_row(column, value)
            console.print(table)
    for s in summaries:
        console.print(f"{s.name}: {s.command or '(command not recorded)'}", markup=False, soft_wrap=True)
        for resume in s.resumes:
            step = f" at step {resume['step']:,}" if isinstance(resume.get("step"), int) else ""
            console.print(
                f"  resumed{step}: {resume.get('command') or '(command not recorded)'}", markup=False, soft_wrap=True
            )


def _run_row(s) -> tuple[str, ...]:
    params = f" ({s.num_parameters:,})" if s.num_parameters else ""
    data = (s.data or "-") + (f", from {s.init_from}" if s.init_from else "")
    return (
        s.name,
        s.status,
        (s.model or "-") + params,
        s.tokenizer or "-",
        data,
        f"{s.steps:,}" if s.steps is not None else "-",
        duration(s.time) if s.time is not None else "-",
        f"{s.best_val_loss:.4f}" if s.best_val_loss is not None else "-",
        f"{s.best_bits_per_char:.4f}" if s.best_bits_per_char is not None else "-",
        one_line(s.last_sample, 32),
    )


def print_compressed(files) -> None:
    """``charlstm info FILE.clstm``: one table per file, what its header says (as ``xz -l`` does)."""
    from rich.table import Table

    console = stdout_console()
    for f in files:
        table = Table(title=f"charlstm info {f.name}", show_header=False, title_justify="left")
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        rate = f" ({f.bits_per_byte:.4f} bits per byte)" if f.length else ""
        table.add_row("sizes", f"{f.length:,} bytes -> {f.size:,}{rate}")
        table.add_row("coded", _coding(f))
        table.add_row("model", f"weights digest {f.model} ({f.tokens:,} tokens coded)")
        table.add_row("made with", f"torch {f.torch} on {f.kernels} kernels, {f.threads} threads, "
                                   f"constriction {f.coder}; format {f.format}")
        console.print(table)


def _coding(f) -> str:
    """The settings a file was coded with, as the flags that give them."""
    parts = [f"{f.streams} stream" + ("s" if f.streams != 1 else ""), f"--weights {f.weights}"]
    if f.adapt is not None:
        a = f.adapt
        parts.append(f"--adapt ({a['adapt_method']}, lr {a['adapt_lr']:g}, decay {a['adapt_decay']:g}, "
                     f"bptt {a['adapt_bptt']}, depth {a.get('adapt_depth', 'all')}, tune {a.get('adapt_tune', 0):g}, "
                     f"prior {a.get('adapt_prior', 0)})")
    if f.cache is not None:
        c = f.cache
        chosen = ", ".join(f"{key} {c[f'cache_{key}']:g}" for key in ("theta", "lambda") if c.get(f"cache_{key}") is not None)
        parts.append(f"--cache-size {c['cache_size']:,}" + (f" ({chosen})" if chosen else ""))
    if f.context is not None:
        parts.append(f"--context (digest {f.context})")
    if f.side:
        parts.append(f"{f.side:,} bytes of side channel")
    return ", ".join(parts)
