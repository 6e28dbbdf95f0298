"""``charlstm export``: a trained model in forms other programs open.

    source            the checked model and its card, read through the one loader; --out and --force
    folder            safetensors: model.safetensors + config.json (+ tokenizer.model)
    onnx_graph        onnx: ids, h, c -> logits, h, c, the recurrent layers as ONNX's own operators
    html_page         html: one self-contained page that writes in the browser (page.html, stepper.js)

The folder is read back by ``charlstm.runs.folder`` (below this floor), so ``charlstm.load``,
``sample``, ``eval`` and ``chat`` open it as they open a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from charlstm.errors import ConfigError

FORMATS = ("safetensors", "onnx", "html")


@dataclass
class ExportResult:
    format: str
    out: Path
    files: list[Path]

    @property
    def size(self) -> int:
        """Bytes written, all files together."""
        return sum(f.stat().st_size for f in self.files)


def export(
    run: str | os.PathLike, format: str, out: str | os.PathLike, force: bool = False, dtype: str = "int8"
) -> ExportResult:
    """Export the model at ``run`` (a run directory, a checkpoint or an exported folder) as
    ``format`` to ``out``; ``out`` is never replaced unless ``force``. ``dtype`` (html only):
    f32, f16 or int8."""
    from charlstm.export.html_page import DTYPES
    from charlstm.export.source import check_out, load_source

    if format not in FORMATS:
        raise ConfigError(f"--format {format}: not one of {', '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}")
    out = check_out(out, force, folder=format == "safetensors")
    if format == "onnx":
        from charlstm.export.onnx_graph import require_onnx

        require_onnx()  # before the model is loaded
    source = load_source(run)
    if format == "safetensors":
        from charlstm.export.folder import write_folder

        files = write_folder(source, out)
    elif format == "onnx":
        from charlstm.export.onnx_graph import write_onnx

        files = write_onnx(source, out)
    else:
        from charlstm.export.html_page import page_tokenizer, write_html

        page_tokenizer(source.tokenizer)  # SentencePiece: the one-line refusal, before any work
        files = write_html(source, out, dtype)
    return ExportResult(format, out, files)


__all__ = ["FORMATS", "ExportResult", "export"]
