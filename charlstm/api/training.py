"""Training and reading runs: ``train``, ``resume``, ``read_run``, ``held_out_text``, and
``text_source`` (what FILE arguments name)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from charlstm.api.sources import PathLike, _source
from charlstm.config import ModelShape, TrainConfig
from charlstm.errors import ConfigError
from charlstm.runs.info import RunSummary
from charlstm.training.trainer import TrainResult

# ------------------------------------------------------------------------------------- training

_TRAIN_SETTINGS = frozenset(TrainConfig.field_names()) | frozenset(ModelShape.field_names())


def _with_progress(progress, run):
    """``run(events)`` with the events ``progress`` asks for: True, a bar (``charlstm.display``,
    closed however training ends); False, nothing; or an object with the ``TrainingEvents``
    hooks, used as it is (the command line passes its own)."""
    if progress is not True:
        return run(progress or None)
    from charlstm.display import TrainBar

    bar = TrainBar()
    try:
        return run(bar)
    finally:
        bar.close()


def _check_names(settings: dict, allowed, what: str) -> None:
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        from charlstm.config import flag

        raise ConfigError(
            f"{', '.join(flag(n) for n in unknown)}: not a setting of {what} "
            "(settings are named as the flags of charlstm train, with _ for -: hidden_size=...)"
        )


def train(
    files=None,
    *,
    out: PathLike | None = None,
    progress=True,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    init_from: PathLike | None = None,
    strict_vocab: bool = False,
    command: list[str] | None = None,
    **settings,
) -> TrainResult:
    """Train a model on ``files`` (a path, a list of paths, directories and patterns, or what
    ``text_source`` returned; None: the built-in corpus), checkpoints in ``out`` (default
    ``checkpoints/<file stem>``), as ``charlstm train`` does. ``settings``: ``TrainConfig`` and
    ``ModelShape`` fields, named as the flags (``hidden_size=256``, ``max_time=120``).
    ``init_from``: fine-tune, starting from that run's weights and tokenizer. ``progress``: True
    draws a bar. ``command``: the command line to record in the run's config.json.

    Returns the ``TrainResult``: ``run_dir``, ``metrics``, ``best_val_loss``, ``stop_reason``, ``steps``, ``best_path``, ``last_path``, ..."""
    from charlstm.training.trainer import train as run_training

    _check_names(settings, _TRAIN_SETTINGS, "train")
    config = TrainConfig.from_dict(settings)
    shape = ModelShape.from_dict(settings)  # bad model settings are reported before any work
    init = None
    if init_from is not None:
        from charlstm.training.finetune import plan_init

        init = plan_init(init_from, settings, strict_vocab=strict_vocab)
        config = TrainConfig.from_dict({**settings, **init.train_settings})
        shape = init.shape
    elif strict_vocab:
        raise ConfigError("--strict-vocab goes with --init-from")
    if settings.get("size") == "auto" and config.max_time is None:
        raise ConfigError("--size auto needs --max-time: it sizes the model for the time budget")
    source = _source(files, separator, val_files, skip_bad_files, config.encoding_errors)
    # What --size auto keeps as given: shape options, and the recipe options a small text's sizing sets.
    recipe = ("epochs", "eval_every", "patience", "ema")  # charlstm.training.sizing.small_text_recipe
    shape_given = [name for name in (*ModelShape.field_names(), *recipe) if name in settings]
    return _with_progress(
        progress,
        lambda events: run_training(
            source, config, shape, out=out, events=events, init=init, command=command, shape_given=shape_given
        ),
    )


def resume(
    run: PathLike,
    files=None,
    *,
    progress=True,
    separator: str | None = None,
    val_files: Sequence[PathLike] = (),
    skip_bad_files: bool = False,
    command: list[str] | None = None,
    **changes,
) -> TrainResult:
    """Continue the run in ``run`` exactly where its last checkpoint left it (``charlstm train
    --resume``); ``files`` default to the text it trained on. ``changes``: settings to change
    (``max_steps=``, ``lr=``, ...; those that fix the model, its tokens or the order of the data
    cannot change). Returns the ``TrainResult``, as ``train``."""
    from charlstm.training.trainer import resume as resume_training

    _check_names(changes, _TRAIN_SETTINGS, "train")
    source = None
    if files is not None and not (isinstance(files, (list, tuple)) and not files):
        source = _source(files, separator, val_files, skip_bad_files, changes.get("encoding_errors", "strict"))
    return _with_progress(progress, lambda events: resume_training(run, source, changes=changes, events=events, command=command))


def read_run(path: PathLike) -> RunSummary:
    """What ``charlstm info`` shows of the run in ``path``: status, command, model, tokenizer,
    data, steps, time, best validation loss, last sample and the metrics. Reads only whole files:
    works on a run that is training, finished or killed."""
    from charlstm.runs.info import read_run as read

    return read(path)


def held_out_text(run: PathLike) -> str:
    """The text the run at ``run`` held out and validated on (the last ``val_fraction`` of its
    tokens, decoded): what ``charlstm eval`` should score to compare with the run's own figures."""
    from charlstm.runs.directory import validation_text

    return validation_text(Path(run))
