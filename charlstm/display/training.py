"""Training progress on a terminal: the start-up lines, the bar, samples above it, the summary."""

from __future__ import annotations

import math
import sys
import time

from charlstm.display.consoles import duration, stderr_console


class TrainProgress:
    """``TrainingEvents`` for a terminal: a progress bar during training and a summary table at
    the end, all on stderr."""

    def __init__(self) -> None:
        self.console = stderr_console()
        self.bar = None
        self.val_loss = math.nan
        self.last_update = 0.0
        self.info = None  # the run's ``TrainInfo``, once it starts

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:  # an error ends the bar's line before its message is printed
            self.bar.close()
            self.bar = None

    def on_start(self, info) -> None:
        """``info``: the run's ``charlstm.training.setup.TrainInfo``."""
        from rich.markup import escape
        from tqdm import tqdm

        self.info = info
        self.console.print(
            f"run directory [bold]{escape(info.run_dir)}[/]  device {info.device}, {info.precision}\n"
            f"tokenizer {info.tokenizer} (vocabulary {info.vocab_size:,})\n"
            f"model {info.num_parameters:,} parameters  "
            f"tokens {info.train_tokens:,} train / {info.val_tokens:,} validation"
            + (
                f" (scored: the first {info.val_tokens_scored:,})"
                if info.val_tokens_scored < info.val_tokens
                else ""
            )
            + f"  {info.steps_per_epoch:,} steps per epoch"
        )
        size = info.size
        if size and "shape" in size:
            self.console.print(
                f"size auto: {size['shape']} LSTM, dropout {size['dropout']:g}: {size['reason']}",
                markup=False,
                soft_wrap=True,  # one line, also in a log
            )
        elif size:
            self.console.print(f"size: {size['reason']}", markup=False, soft_wrap=True)
        if info.init_from:
            start = info.init_from
            step = f" (step {start['step']:,})" if start.get("step") is not None else ""
            self.console.print(
                f"starting from {start['path']}{step}: its weights and tokenizer, a fresh optimizer",
                markup=False,
            )
        if info.unknown_chars:
            from charlstm.training.finetune import describe_unknown

            self.console.print(
                f"note: {describe_unknown(info.unknown_chars)} of the text are not in the model's vocabulary: "
                f"they are trained as the unknown symbol ({info.unknown_tokens:,} places). "
                "--strict-vocab refuses such a text; for a text in new scripts, train a new model with "
                "--tokenizer byte or --tokenizer bpe",
                markup=False,
            )
        if info.files:
            skipped = f" ({info.skipped} skipped)" if info.skipped else ""
            self.console.print(f"corpus {info.files} files{skipped}  validation: {info.validation}", markup=False)
        if info.world_size > 1:
            self.console.print(
                f"data parallel: {info.world_size} processes ({info.backend}) x batch "
                f"{info.global_batch // info.world_size} = global batch {info.global_batch} streams"
            )
        if info.replacements:
            self.console.print(f"invalid UTF-8: {info.replacements:,} byte sequences replaced by U+FFFD")
        if info.resumed_from_step is not None:
            self.console.print(f"resuming from step {info.resumed_from_step:,} ({info.token_cache})")
        self.bar = tqdm(
            total=info.planned_steps,
            initial=info.resumed_from_step or 0,
            file=sys.stderr,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 10.0,  # a log file gets a line every 10 s
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_update < 0.5:
            return
        self.last_update = now
        eta = (self.info.planned_steps - step) * elapsed / step
        if self.info.max_time:
            eta = min(eta, max(0.0, self.info.max_time - elapsed))
        val = f"{self.val_loss:.3f}" if math.isfinite(self.val_loss) else "-"  # none measured yet
        self.bar.set_postfix_str(
            f"loss {float(train_loss):.3f}, val {val}, {tokens_per_s:,.0f} tok/s, ETA {duration(eta)}",
            refresh=False,
        )

    def on_eval(self, record: dict) -> None:
        self.val_loss = record["val_loss"]

    @property
    def wants_samples(self) -> bool:
        """By default, samples are shown where someone is watching: stderr is a terminal."""
        return sys.stderr.isatty()

    def on_sample(self, step: int, val_loss: float, text: str) -> None:
        header = f"--- sample at step {step:,}, validation loss {val_loss:.4f}"
        if self.bar is not None:
            self.bar.write(f"{header}\n{text}", file=sys.stderr)  # above the bar, which stays
        else:
            print(f"{header}\n{text}", file=sys.stderr)

    def on_end(self, result) -> None:
        from rich.table import Table

        if self.bar is not None:
            self.bar.close()
            self.bar = None
        table = Table(title="charlstm train", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "steps", f"{result.steps:,} ({result.epochs_done:.2f} epochs, stopped by {result.stop_reason})"
        )
        table.add_row("time", duration(result.elapsed))
        table.add_row("tokens/s", f"{result.tokens_per_s:,.0f}")
        table.add_row("parameters", f"{result.num_parameters:,}")
        unit = "char" if self.info is not None and self.info.tokenizer == "char" else "token"
        if math.isfinite(result.best_val_loss):
            best = result.best_val_loss
            table.add_row(
                "best validation loss", f"{best:.4f} nats/{unit} = {best / math.log(2):.4f} bits/{unit}"
            )
            table.add_row("last validation loss", f"{result.last_val_loss:.4f} nats/{unit}")
            table.add_row("best checkpoint", str(result.best_path))
        else:
            table.add_row("validation loss", "not measured yet")
        table.add_row("last checkpoint", str(result.last_path))
        if result.metrics:
            table.add_row("metrics", str(result.run_dir / "metrics.jsonl"))
        self.console.print(table)


class TrainBar:
    """``TrainingEvents`` for ``charlstm.train(..., progress=True)``: one progress bar (tqdm.auto:
    a terminal's or a notebook's), with the loss and validation loss beside it; nothing else."""

    wants_samples = False

    def __init__(self) -> None:
        self.bar = None
        self.val_loss = math.nan
        self.last_update = 0.0

    def on_start(self, info) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=info.planned_steps, initial=info.resumed_from_step or 0, unit="step", file=sys.stderr)

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        self.bar.update(1)
        now = time.monotonic()
        if now - self.last_update >= 0.5:
            self.last_update = now
            val = f"{self.val_loss:.3f}" if math.isfinite(self.val_loss) else "-"
            self.bar.set_postfix_str(f"loss {float(train_loss):.3f}, val {val}", refresh=False)

    def on_eval(self, record: dict) -> None:
        self.val_loss = record["val_loss"]

    def on_sample(self, step: int, val_loss: float, text: str) -> None:
        pass

    def on_end(self, result) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
