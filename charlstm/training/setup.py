"""Getting a training run ready: everything the ``Trainer`` is handed, checked and built.

A new run trains its tokenizer on the text (one pass that also checks every byte) before anything
is written, then makes the run directory, writes the token file, lays the data out, and builds
the model and optimizer. A resumed run takes the tokenizer, weights, optimizer and training state
from its checkpoint (``charlstm.runs.directory.plan_resume`` has checked it). Under torchrun,
rank 0 does the writing and the other ranks follow.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from charlstm.data.batches import TrainData, lay_out, min_train_tokens
from charlstm.runs.checkpoint import TrainState
from charlstm.config import DEFAULT_EPOCHS, ModelConfig, ModelShape, TrainConfig
from charlstm.distributed import Dist, device_for
from charlstm.errors import CheckpointError, DataError
from charlstm.training.finetune import InitFrom, unknown_characters
from charlstm.hardware import Precision, resolve_precision, select_device
from charlstm.lnlstm import kernel as ln_kernel
from charlstm.runs.lock import RunLock
from charlstm.model import LanguageModel, decays
from charlstm.runs.directory import ResumePlan, prepare_run_dir, token_file, write_metrics
from charlstm.training.averaging import WeightAverage
from charlstm.training.sizing import SHAPE_FIELDS, choose_size, many_passes_recipe, small_text_recipe
from charlstm.data.source import Source
from charlstm.data.text import read_head
from charlstm.data.tokenizers import Tokenizer, tokenizer_from_dict, train_tokenizer


def _recorded_if_given():
    """A ``TrainInfo`` field left out of its record while it is None."""
    return field(default=None, metadata={"omit_if_none": True})


@dataclass
class TrainInfo:
    """What the start of training shows (``TrainingEvents.on_start``), recorded under ``info`` in
    the run's ``config.json`` (``to_dict``)."""

    run_dir: str
    corpus: str  # the text's name
    device: str
    precision: str  # ``Precision.description``
    tokenizer: str  # its kind
    vocab_size: int
    num_parameters: int
    train_tokens: int
    val_tokens: int
    val_tokens_scored: int  # at most --eval-tokens of them
    world_size: int
    backend: str | None  # torchrun's: "nccl" or "gloo"
    global_batch: int  # streams per step over all processes
    token_cache: str  # "wrote PATH" or "reused PATH"
    replacements: int  # invalid UTF-8 sequences replaced (--encoding-errors replace)
    steps_per_epoch: int
    planned_steps: int | None  # None: the budget is the plan
    max_time: float | None
    resumed_from_step: int | None
    unknown_tokens: int  # places trained as the unknown symbol
    # Recorded only when there is something to say:
    size: dict | None = _recorded_if_given()  # --size auto's choice (``SizeChoice.to_dict``) or why not
    files: int | None = _recorded_if_given()  # a corpus: its files,
    skipped: int | None = _recorded_if_given()  # how many --skip-bad-files left out,
    validation: str | None = _recorded_if_given()  # and what validation is
    init_from: dict | None = _recorded_if_given()  # fine-tuning: the checkpoint started from
    unknown_chars: list[str] | None = _recorded_if_given()  # fine-tuning: characters the model lacks

    def to_dict(self) -> dict:
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if not (f.metadata.get("omit_if_none") and getattr(self, f.name) is None)
        }


@dataclass
class TrainingSetup:
    """What a training run starts from: its settings, files, data, model, optimizer and state."""

    config: TrainConfig
    model_config: ModelConfig
    tokenizer: Tokenizer
    source: Source
    run_dir: Path
    corpus: dict  # what checkpoints record of the text (``Source.record``)
    data: TrainData
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    state: TrainState
    device: torch.device
    precision: Precision
    info: TrainInfo  # what the start of training shows
    dist: Dist = field(default_factory=Dist)
    init_from: dict | None = None  # the checkpoint a fine-tuned run started from (path, sha256, step)
    sample_prime: str = "\n"  # what training samples start from: the text's first line
    average: WeightAverage | None = None  # --ema: the moving average of the weights


def prepare_new(
    source: Source,
    config: TrainConfig,
    shape: ModelShape,
    *,
    out: str | os.PathLike | None,
    dist: Dist,
    init: InitFrom | None = None,
    lock: RunLock | None = None,
    shape_given: Collection[str] | None = None,
) -> TrainingSetup:
    """A new run on ``source`` in ``out`` (default: ``checkpoints/<stem>``, never over a run);
    with ``init``, starting from that model's weights and tokenizer (``charlstm.training.finetune.plan_init``).
    ``lock`` (rank 0's): taken on the run directory as soon as it exists; the caller releases it.
    ``shape_given``: the ``ModelShape`` fields the user chose (and ``epochs``, ``eval_every``,
    ``patience``, ``ema`` if chosen: a small text's recipe keeps them); with it, ``--size auto`` (and
    ``--max-time``) sizes the rest by the budget. None: ``shape`` is used as it is."""
    device, precision = _hardware(config, dist)
    torch.manual_seed(config.seed)

    # Pass 1 over the text (rank 0): train the tokenizer (or, fine-tuning, find the characters
    # the model does not know), check every byte. Nothing is written before that has worked.
    def first_pass():
        if init is not None:
            unknown = unknown_characters(init, source.chunks(), source.name)
            return init.tokenizer.to_dict(), unknown, *prepare_run_dir(out, source.stem, lock=lock)
        tokenizer = train_tokenizer(
            config.tokenizer, source.chunks(), config.sentencepiece_vocab_size, size_hint=source.size_hint()
        )
        return tokenizer.to_dict(), [], *prepare_run_dir(out, source.stem, lock=lock)

    record, unknown, run_dir, created = dist.on_main(first_pass)
    created = created if dist.is_main else None  # only rank 0 made (and may remove) it
    tokenizer = tokenizer_from_dict(record)
    try:
        setup = _build(
            source, config, shape, tokenizer, Path(run_dir), payload=None, dist=dist, device=device,
            precision=precision, init=init, shape_given=shape_given,
        )
        if init is not None:
            setup.info.init_from = init.record
            setup.info.unknown_chars = unknown
    except BaseException:
        if created is not None:  # leave nothing behind for a text that cannot be trained on
            if lock is not None:
                lock.release()
            shutil.rmtree(created, ignore_errors=True)
        raise
    return setup


def prepare_resume(plan: ResumePlan, dist: Dist) -> TrainingSetup:
    """The run of ``plan`` set up to go on exactly where its last checkpoint left it."""
    device, precision = _hardware(plan.config, dist)
    torch.manual_seed(plan.config.seed)
    tokenizer = tokenizer_from_dict(plan.payload["tokenizer"])
    setup = _build(
        plan.source, plan.config, plan.shape, tokenizer, plan.run_dir, payload=plan.payload, dist=dist,
        device=device, precision=precision,
    )
    setup.init_from = plan.payload.get("init_from")
    return setup


def _hardware(config: TrainConfig, dist: Dist) -> tuple[torch.device, Precision]:
    device = device_for(dist, select_device(config.device))
    return device, resolve_precision(config.precision, device)


def auto_cell(device: torch.device) -> str:
    """``--size auto``'s cell when none is given: the LN-LSTM on a CPU where its C++ recurrence
    builds (``charlstm.lnlstm.kernel``), else the LSTM (on a GPU cuDNN's LSTM is far faster)."""
    return "ln-lstm" if device.type == "cpu" and ln_kernel.status().built else "lstm"


def _auto_size(shape, shape_given, config, vocab_size, train_tokens, steps_per_epoch, dist, device, precision):
    """``--size auto`` (``charlstm.training.sizing``): the shape for the time budget, the config
    (a small text's recipe: ``small_text_recipe``) and what to record of the choice (None: sizing
    was not asked for). Unless ``--cell`` is given, the cell is the LN-LSTM on a CPU where its C++
    recurrence builds (1.4063 against the LSTM's 1.4508 at 300 s on tinyshakespeare), else the LSTM."""
    if config.size != "auto" or config.max_time is None or shape_given is None:
        return shape, config, None
    if set(shape_given) & set(SHAPE_FIELDS):
        return shape, config, {"reason": "the shape options given are kept"}
    if dist.enabled:
        return shape, config, {"reason": "off under torchrun (each process would time its own speed): the default shape"}
    if "cell" not in shape_given:
        shape = dataclasses.replace(shape, cell=auto_cell(device))
    choice = choose_size(
        shape, config, vocab_size, train_tokens, device, precision, keep_dropout="dropout" in shape_given
    )
    record = choice.to_dict()
    recipe = small_text_recipe(choice.epochs, train_tokens, steps_per_epoch, config, shape_given)
    many = many_passes_recipe(choice.epochs, train_tokens, config, shape_given)
    if many:
        config = dataclasses.replace(config, **many)
        record["recipe"] = many
        record["reason"] += f"; more than {config.epochs or DEFAULT_EPOCHS} passes: stopping after {config.patience} validations without improvement"
    if recipe:
        config = dataclasses.replace(config, **recipe)
        record["recipe"] = recipe
        record["reason"] += (
            f"; a small text: validating every {config.eval_every} steps (a pass), "
            f"stopping after {config.patience} validations without improvement"
            + (f", weights averaged (--ema {config.ema:g})" if config.ema is not None else "")
        )
    return choice.shape, config, record


def _build(
    source: Source,
    config: TrainConfig,
    shape: ModelShape,
    tokenizer: Tokenizer,
    run_dir: Path,
    *,
    payload: dict | None,
    dist: Dist,
    device: torch.device,
    precision: Precision,
    init: InitFrom | None = None,
    shape_given: Collection[str] | None = None,
) -> TrainingSetup:
    """Tokens, data layout, model, optimizer and state; ``payload``: the checkpoint to resume;
    ``init``: the model a new run starts from; ``shape_given``: see ``prepare_new``."""
    tokens, data = _tokens_and_layout(source, config, tokenizer, run_dir, payload, dist)
    size = None
    if init is None:  # a fine-tuned model keeps its shape
        shape, config, size = _auto_size(
            shape, shape_given, config, tokenizer.vocab_size, data.train_tokens, len(data.windows), dist, device,
            precision,
        )
    _check_long_enough(source, config, data, dist)
    model_config = ModelConfig.of(shape, tokenizer.vocab_size)
    model = LanguageModel(model_config).to(device)  # draws the initial weights (same on every rank)
    if init is not None:  # fine-tuning: its weights; the optimizer below is a fresh one
        model.load_state_dict(init.state_dict)
    optimizer = _adamw(model, config, device)
    if dist.enabled:  # dropout masks differ between ranks
        torch.manual_seed(config.seed + dist.rank)
    data.stream = data.stream.to(device)  # on the CPU: still a view of the memory-mapped file
    state, average = _training_state(payload, model, optimizer, config, len(data.windows), dist, device, run_dir)
    info = TrainInfo(
        run_dir=str(run_dir),
        corpus=source.name,
        device=str(device),
        precision=precision.description,
        tokenizer=tokenizer.kind,
        vocab_size=tokenizer.vocab_size,
        num_parameters=model.num_parameters(),
        train_tokens=data.train_tokens,
        val_tokens=data.val_tokens,
        val_tokens_scored=data.val_tokens_scored,
        world_size=dist.world_size,
        backend=dist.backend,
        global_batch=config.batch_size * dist.world_size,
        token_cache=tokens.how,
        replacements=tokens.stats.replacements,
        steps_per_epoch=len(data.windows),
        planned_steps=planned_steps(config, len(data.windows)),
        max_time=config.max_time,
        resumed_from_step=None if payload is None else state.step,
        unknown_tokens=tokens.unknown,
        size=size,
        **source.files_info(config.val_fraction),
    )
    return TrainingSetup(
        config=config, model_config=model_config, tokenizer=tokenizer, source=source, run_dir=run_dir,
        corpus=source.record(tokens.stats), data=data, model=model, optimizer=optimizer, state=state,
        device=device, precision=precision, dist=dist, info=info,
        init_from=None if init is None else init.record, sample_prime=sample_prime(source, tokenizer),
        average=average,
    )


def _tokens_and_layout(source, config: TrainConfig, tokenizer: Tokenizer, run_dir: Path, payload, dist: Dist):
    """The token file (written by rank 0, or reused; a resumed run's must hash as its checkpoint
    says) and the data laid out for this rank."""
    expected = None if payload is None else payload["corpus"]["sha256"]
    tokens = dist.on_main(lambda: token_file(run_dir, source, tokenizer, expected_sha256=expected), share=False)
    if not dist.is_main:  # rank 0 has written the token file; read it, or make one here
        tokens = token_file(
            run_dir, source, tokenizer, expected_sha256=expected, private=f"charlstm-rank{dist.rank}-"
        )
    data = lay_out(
        tokens.ids, config.val_fraction, batch_size=config.batch_size, bptt=config.bptt,
        eval_tokens=config.eval_tokens, rank=dist.rank, world_size=dist.world_size, val_start=tokens.val_start,
        variable_bptt_seed=config.seed if config.variable_bptt else None,
    )
    return tokens, data


def _check_long_enough(source: Source, config: TrainConfig, data: TrainData, dist: Dist) -> None:
    needed = min_train_tokens(config.batch_size, config.bptt)
    per_rank = data.train_tokens // dist.world_size
    if per_rank < needed:
        in_each = f" per process ({dist.world_size} processes)" if dist.enabled else ""
        raise DataError(
            f"{source.name}: too short for one batch of windows: training needs at least {needed} "
            f"tokens{in_each} (--batch-size {config.batch_size} x (--bptt {config.bptt} + 1)) and "
            f"this text gives {per_rank} after holding out --val-fraction "
            f"{config.val_fraction}; use a longer text or a smaller --batch-size / --bptt"
        )


def _training_state(payload, model, optimizer, config: TrainConfig, steps_per_epoch: int, dist: Dist, device,
                    run_dir: Path) -> tuple[TrainState, WeightAverage | None]:
    """A new run's fresh state, or a resumed run's from its checkpoint (weights and optimizer
    restored into ``model`` and ``optimizer``); and the weight average with --ema."""
    if payload is None:
        state = TrainState(hidden_by_rank=[None] * dist.world_size, torch_rng_by_rank=[None] * dist.world_size)
        return state, None if config.ema is None else WeightAverage(model, config.ema)
    try:
        state = _restore(
            payload, model, optimizer, config=config, steps_per_epoch=steps_per_epoch, dist=dist,
            device=device, run_dir=run_dir,
        )
        # --ema given on resume for the first time: it starts here
        average = None if config.ema is None else WeightAverage(model, config.ema, payload.get("ema"))
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        # What check_train_state cannot see: an optimizer or hidden state of the wrong shape.
        raise CheckpointError(
            f"{run_dir}: refused: its training state does not fit the model ({str(e).strip()[:200]}); "
            "it cannot be resumed (sample and eval can still use it)"
        ) from None
    return state, average


def sample_prime(source: Source, tokenizer: Tokenizer, max_chars: int = 80) -> str:
    """The prime of the samples written while training: the text's first line (at most
    ``max_chars``, and only characters the tokenizer knows), or a newline."""
    line = read_head(source, max_chars).split("\n")[0].rstrip("\r")
    if not line.strip() or (tokenizer.kind == "char" and tokenizer.unknown_chars(line)):
        return "\n"
    return line


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int | None:
    """The steps the run is planned for (``--max-time`` may end it sooner); None: the budget
    (``--max-time`` without ``--epochs`` or ``--max-steps``) is the plan."""
    limit = config.epoch_limit
    steps = None if limit is None else limit * steps_per_epoch
    if config.max_steps is None:
        return steps
    return config.max_steps if steps is None else min(steps, config.max_steps)


def _adamw(model: LanguageModel, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only (not biases or the embedding)."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if decays(n, p)]
    no_decay = [p for n, p in named if not decays(n, p)]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        # One fused kernel for all parameters: ~8x faster than the per-tensor loop on CPU.
        fused=device.type in ("cpu", "cuda"),
    )


def _restore(payload, model, optimizer, *, config, steps_per_epoch, dist, device, run_dir) -> TrainState:
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    for group in optimizer.param_groups:  # the moments must have their parameters' shapes
        for p in group["params"]:
            for name, value in optimizer.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                    raise ValueError(f"the optimizer's {name} has shape {tuple(value.shape)}, not {tuple(p.shape)}")
    # Settings that may change on resume win over the saved optimizer's.
    optimizer.param_groups[0]["weight_decay"] = config.weight_decay
    state = TrainState.from_checkpoint(payload, steps_per_epoch)
    hidden = state.hidden_by_rank[dist.rank]
    zeros = model.init_hidden(config.batch_size)
    if hidden is not None and [tuple(t.shape) for t in hidden] != [tuple(t.shape) for t in zeros]:
        raise ValueError(f"the carried hidden state has shapes {[tuple(t.shape) for t in hidden]}")
    state.hidden_by_rank[dist.rank] = None if hidden is None else tuple(t.to(device) for t in hidden)
    # Last, so nothing above draws from the generators: the run goes on with the same numbers.
    torch.set_rng_state(state.torch_rng_by_rank[dist.rank])
    if device.type == "cuda" and state.cuda_rng:
        torch.cuda.set_rng_state_all(state.cuda_rng)
    if dist.is_main:
        write_metrics(run_dir, state.metrics)  # drop records newer than the checkpoint
    return state
