"""Training progress on a terminal: the start-up lines, the bar, samples above it, the summary."""

from __future__ import annotations

import math
import sys
import time

from charlstm.display.consoles import duration, stderr_console

_FINISHED = ("epochs", "max_steps", "max_time", "patience")  # stop reasons of a run that did what it was asked


class _Bars:
    """The bars of a training run: one for training (steps, or under ``--max-time`` seconds of
    the budget), and while a validation runs, one for its tokens below it. Beside the training
    bar: the latest step's loss and the latest validation loss, kept current at each validation
    and at the end."""

    def __init__(self) -> None:
        self.bar = None
        self.validation = None  # the validation's bar, while one runs
        self.val_loss = math.nan
        self.loss = None  # the latest step's loss (a tensor: read only when shown)
        self.tokens_per_s: float | None = None
        self.last_update = 0.0
        self.info = None  # the run's ``TrainInfo``, once it starts
        self._tqdm = None
        self._mininterval = 0.1

    def _open_bar(self, info, tqdm, mininterval: float = 0.1) -> None:
        self.info, self._tqdm, self._mininterval = info, tqdm, mininterval
        if info.max_time:  # a time bar: the run ends at the budget, whatever the epochs planned
            self.bar = tqdm(
                total=round(info.max_time, 1), unit="s", file=sys.stderr, dynamic_ncols=True, mininterval=mininterval,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s{postfix}",
            )
        else:
            self.bar = tqdm(
                total=info.planned_steps, initial=info.resumed_from_step or 0, file=sys.stderr, unit="step",
                dynamic_ncols=True, mininterval=mininterval,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}{postfix}]",
            )

    def _advance(self, step: int, elapsed: float) -> None:
        if self.info.max_time:
            self.bar.update(max(0.0, min(elapsed, self.bar.total) - self.bar.n))
        else:
            self.bar.update(max(0, step - self.bar.n))

    def _losses(self) -> str:
        loss = f"{float(self.loss):.3f}" if self.loss is not None else "-"
        val = f"{self.val_loss:.3f}" if math.isfinite(self.val_loss) else "-"  # none measured yet
        return f"loss {loss}, val {val}"

    def _postfix(self, eta: float | None) -> str:
        return self._losses()

    def _eta(self, step: int, elapsed: float) -> float | None:
        return None

    def on_step(self, step: int, train_loss, tokens_per_s: float, elapsed: float) -> None:
        self.loss, self.tokens_per_s = train_loss, tokens_per_s
        self._advance(step, elapsed)
        now = time.monotonic()
        if now - self.last_update < 0.5:
            return
        self.last_update = now
        self.bar.set_postfix_str(self._postfix(self._eta(step, elapsed)), refresh=False)

    def on_validation_start(self, step: int, tokens: int) -> None:
        self._close_validation()
        if self.bar is None:
            return
        # On a terminal, below the training bar; in a log (no cursor to move), in the bar's
        # place, and only once a validation has taken 10 s.
        terminal = sys.stderr.isatty()
        self.validation = self._tqdm(
            total=tokens, desc=f"validating at step {step:,}", unit="tok", unit_scale=True, leave=False,
            file=sys.stderr, dynamic_ncols=True, mininterval=self._mininterval,
            position=None if terminal else 0, delay=0 if terminal else 10,
        )

    def on_validation_progress(self, tokens: int) -> None:
        if self.validation is not None:
            self.validation.update(tokens)

    def on_eval(self, record: dict) -> None:
        self._close_validation()
        self.val_loss = record["val_loss"]
        if self.bar is not None:  # shown now, not at the next step
            self.bar.set_postfix_str(self._postfix(self._eta(record["step"], record["time"])), refresh=True)

    def _close_validation(self) -> None:
        if self.validation is not None:
            self.validation.close()
            self.validation = None

    def _end_bar(self, result) -> None:
        """The bar as the run ended: full when it did what it was asked, the last loss beside it."""
        self._close_validation()
        if self.bar is None:
            return
        if math.isfinite(result.last_val_loss):
            self.val_loss = result.last_val_loss
        if self.info is not None and self.info.max_time and result.stop_reason in _FINISHED:
            self.bar.update(self.bar.total - self.bar.n)
        elif self.info is not None and not self.info.max_time and result.stop_reason in _FINISHED:
            self.bar.total = max(self.bar.n, 1)  # stopped before the planned steps (patience): done
        self.bar.set_postfix_str(self._postfix(0.0 if result.stop_reason in _FINISHED else None), refresh=False)
        self.close()

    def close(self) -> None:
        self._close_validation()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class TrainProgress(_Bars):
    """``TrainingEvents`` for a terminal: a progress bar during training (and one for each
    validation) and a summary table at the end, all on stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.console = stderr_console()

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # an error ends the bar's line before its message is printed

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
                f"size auto: {size['shape']} {size.get('cell', 'lstm').upper()}, dropout {size['dropout']:g}: {size['reason']}",
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
        self._open_bar(info, tqdm, mininterval=0.1 if sys.stderr.isatty() else 10.0)  # a log file: a line every 10 s

    def _postfix(self, eta: float | None) -> str:
        parts = [self._losses()]
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        if eta is not None:
            parts.append(f"ETA {duration(eta)}")
        return ", ".join(parts)

    def _eta(self, step: int, elapsed: float) -> float:
        left = [max(0.0, self.info.max_time - elapsed)] if self.info.max_time else []
        if self.info.planned_steps is not None:  # None: the budget is the plan
            left.append((self.info.planned_steps - step) * elapsed / max(1, step))
        return min(left)

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

        self._end_bar(result)
        table = Table(title="charlstm train", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        table.add_row(
            "steps", f"{result.steps:,} ({result.epochs_done:.2f} epochs, stopped by {result.stop_reason})"
        )
        budget = f" of the {duration(result.max_time)} budget" if result.max_time else ""
        overhead = getattr(result, "overhead_seconds", 0.0)
        spent = f"; validation, checkpoints and samples {duration(overhead)}" if overhead >= 0.5 else ""
        table.add_row("time", f"{duration(result.elapsed)}{budget}{spent}")
        if getattr(result, "stop_detail", ""):
            table.add_row("stopped", result.stop_detail)  # and how much of the budget it used
        if getattr(result, "overrun", None):
            table.add_row("over budget", result.overrun)
        table.add_row("tokens/s", f"{result.tokens_per_s:,.0f} (training steps only)")
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


class TrainBar(_Bars):
    """``TrainingEvents`` for ``charlstm.train(..., progress=True)``: the progress bar (tqdm.auto:
    a terminal's or a notebook's), with the loss and validation loss beside it, and a bar for
    each validation; nothing else."""

    wants_samples = False

    def on_start(self, info) -> None:
        from tqdm.auto import tqdm

        self._open_bar(info, tqdm)

    def on_sample(self, step: int, val_loss: float, text: str) -> None:
        pass

    def on_end(self, result) -> None:
        self._end_bar(result)
