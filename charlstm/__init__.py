"""charlstm: train LSTM language models on your own text, sample from them, measure them.

    import charlstm
    lm = charlstm.load("checkpoints/my_text")
    print(lm.generate("ROMEO:", length=300, seed=1))
    result = charlstm.train("my_text.txt", out="checkpoints/x", max_time=120, progress=True)

Importing charlstm is light (no torch): the API (``charlstm.api``) is imported on first use of
one of its names (PEP 562).
"""

from charlstm.errors import (
    CharlstmError,
    CheckpointError,
    ConfigError,
    DataError,
    NumericalError,
    RunDirectoryError,
    RunLockedError,
    WriteError,
)

from charlstm._version import __version__

_API = (
    "Adaptation",
    "Completion",
    "CompressedFile",
    "Model",
    "ModelInfo",
    "Session",
    "held_out_text",
    "load",
    "read_compressed",
    "read_run",
    "resume",
    "train",
)

__all__ = [
    *_API,
    "CharlstmError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NumericalError",
    "RunDirectoryError",
    "RunLockedError",
    "WriteError",
    "__version__",
]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module("charlstm.api"), name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'charlstm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
