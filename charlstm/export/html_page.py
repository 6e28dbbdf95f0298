"""``charlstm export --format html``: one self-contained HTML file that writes text in the
browser, opened from disk or any static host, fetching nothing (its Content-Security-Policy
forbids it).

The page is ``page.html`` with three things put in: the model as JSON (config, tokenizer, model
card, and every weight as base64: ``f32``, ``f16``, or ``int8`` with one float32 scale per row),
the plain-JavaScript stepper ``stepper.js`` (also run by Node in the tests), and the title.
``page_weights`` gives the weights the page computes with, dequantized exactly as the page does,
so PyTorch can check the page and measure what each dtype costs.
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path

from charlstm.atomic import atomic_write
from charlstm.errors import CharlstmError
from charlstm.export.source import ExportSource

DTYPES = ("f32", "f16", "int8")
PAGE_FORMAT = "charlstm-html"


def _asset(name: str) -> str:
    return resources.files("charlstm.export").joinpath(name).read_text(encoding="utf-8")


def stepper_js() -> str:
    """The JavaScript stepper, as the page embeds it (a file of the package: ``stepper.js``)."""
    return _asset("stepper.js")


def page_tensors(model) -> dict:
    """The weights the page needs, by ``state_dict`` name (a tied projection once)."""
    state = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_weights:
        del state["head.weight"]
    return state


def encode_tensor(tensor, dtype: str):
    """``tensor`` stored as ``dtype`` -> (its JSON record, the float32 tensor the page will compute
    with). Matrices take ``dtype``; vectors (biases) stay float32. int8: per row, scale =
    max |w| / 127 and q = round(w / scale); the page multiplies back, q * scale, in float32."""
    import torch

    record = {"shape": list(tensor.shape)}
    if tensor.dim() < 2 or dtype == "f32":
        stored = tensor.float()
        record.update(dtype="f32", data=_b64(stored))
        return record, stored
    if dtype == "f16":
        half = tensor.half()
        record.update(dtype="f16", data=_b64(half))
        return record, half.float()
    if dtype == "int8":
        absmax = tensor.abs().amax(dim=1)  # (rows,)
        scale = torch.where(absmax > 0, absmax / 127, torch.ones_like(absmax)).float()
        q = torch.round(tensor / scale[:, None]).clamp(-127, 127).to(torch.int8)
        record.update(dtype="int8", data=_b64(q), scale=_b64(scale))
        return record, q.float() * scale[:, None]
    raise CharlstmError(f"--dtype {dtype}: not one of {', '.join(DTYPES)}")


def _b64(tensor) -> str:
    return base64.b64encode(tensor.contiguous().numpy().tobytes()).decode("ascii")


def page_weights(model, dtype: str) -> dict:
    """A ``state_dict`` for ``LanguageModel`` holding the weights the page computes with."""
    state = {name: encode_tensor(t, dtype)[1] for name, t in page_tensors(model).items()}
    if model.config.tie_weights:
        state["head.weight"] = state["embedding.weight"]
    return state


def page_tokenizer(tokenizer) -> dict:
    """The tokenizer as the page reads it: char (code points) and byte; SentencePiece is refused."""
    if tokenizer.kind == "char":
        return {"kind": "char", "codepoints": [ord(c) for c in tokenizer.chars]}
    if tokenizer.kind == "byte":
        return {"kind": "byte"}
    raise CharlstmError(
        f"--format html runs char and byte models in the browser, and this model uses the {tokenizer.kind} "
        "(SentencePiece) tokenizer; export it with --format onnx or --format safetensors, or train with "
        "--tokenizer char or byte"
    )


def page_record(source: ExportSource, dtype: str) -> dict:
    """Everything the page knows about the model, as JSON-ready data."""
    config = source.config
    return {
        "format": PAGE_FORMAT,
        "format_version": 1,
        "config": config.to_dict(),
        "tokenizer": page_tokenizer(source.tokenizer),
        "card": source.card(),
        "dtype": dtype,
        "tensors": {name: encode_tensor(t, dtype)[0] for name, t in page_tensors(source.model).items()},
    }


def render_page(record: dict, title: str) -> str:
    """The page's HTML with ``record`` and the stepper in it."""
    # "<" escaped, so nothing in the data (a corpus name) can close the <script> element.
    data = json.dumps(record, ensure_ascii=True, separators=(",", ":")).replace("<", "\\u003c")
    parts = {
        "TITLE": html.escape(title),
        "STEPPER": stepper_js().replace("</script", "<\\/script"),
        "MODEL": data,
    }
    return re.sub(r"__(TITLE|STEPPER|MODEL)__", lambda m: parts[m.group(1)], _asset("page.html"))


def write_html(source: ExportSource, out: Path, dtype: str = "int8") -> list[Path]:
    record = page_record(source, dtype)
    title = f"charlstm: a model of {source.trained_on}"
    return [atomic_write(out, render_page(record, title))]


def model_record_of_page(page: str) -> dict:
    """The model record a page carries (tests and benchmarks read the page itself back)."""
    marker = '<script type="application/json" id="model">'
    start = page.index(marker) + len(marker)
    return json.loads(page[start : page.index("</script>", start)])
