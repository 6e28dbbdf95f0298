"""The public Python API: load a trained model and use it, train or resume a run, read a run.

    import charlstm
    lm = charlstm.load("checkpoints/my_text")                # a run directory or a .pt file
    text = lm.generate("ROMEO:", length=300, seed=1)           # the new text, prime not included
    for piece in lm.stream("ROMEO:", length=300): ...          # the same text, as it is written
    result = charlstm.train("my_text.txt", out="checkpoints/x", max_time=120, progress=True)

Settings are keyword arguments named as the command-line flags (``--top-k`` -> ``top_k``),
validated by the config dataclasses of ``charlstm.config``: a bad value raises ``ConfigError``
with the message the command line prints. Every error a user can cause is a ``CharlstmError``;
nothing here prints (``progress=True`` asks ``charlstm.display`` for a bar) or exits. The
command line (``charlstm.cli``) is built on these calls.

    model       ``load``, the ``Model`` handle (writing text), ``Session``, the records
    measuring   what ``Model`` measures: ``score``, ``evaluate``, ``inspect``, ``adapt``
    compressing what ``Model`` compresses: ``compress``, ``decompress``; ``read_compressed``
    training    ``train``, ``resume``, ``read_run``, ``held_out_text``
    sources     ``text_source``: what FILE arguments name
"""

from charlstm.api.compressing import CompressedFile, read_compressed
from charlstm.api.measuring import Adaptation
from charlstm.api.model import Completion, Model, ModelInfo, Session, load
from charlstm.api.sources import text_source
from charlstm.api.training import held_out_text, read_run, resume, train

__all__ = [
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
    "text_source",
    "train",
]
