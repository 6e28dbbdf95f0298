"""``charlstm export``: a model in a form other programs open (``charlstm.export``)."""

from __future__ import annotations

import click

from charlstm.cli.base import cli, force_option, run_argument

_FORMATS = ("safetensors", "onnx", "html")
_DTYPES = ("f32", "f16", "int8")


@cli.command()
@run_argument
@click.option(
    "--format", "format_", type=click.Choice(_FORMATS), required=True, help="What to write (see above)."
)
@click.option(
    "--out", type=click.Path(), metavar="PATH", required=True,
    help="The folder (safetensors) or file (onnx, html) to write.",
)
@click.option("--dtype", type=click.Choice(_DTYPES), default="int8", show_default=True,
              help="html: how the page stores the weights (int8: one scale per row).")
@force_option
def export(run: str, format_: str, out: str, dtype: str, force: bool) -> None:
    """Write the model of RUN so that other programs, or a browser, can run it.

    RUN: a run directory, a checkpoint file or an exported folder.

    \b
    safetensors  a folder: model.safetensors, config.json (model config, tokenizer, validation
                 loss, format version, checksums) and tokenizer.model for SentencePiece; the
                 Hugging Face layout. charlstm sample/eval/chat and charlstm.load open it.
    onnx         one .onnx graph: ids (T, B), h, c -> logits, h, c, with T and B dynamic; LSTM,
                 GRU and tanh RNN as ONNX's LSTM, GRU and RNN operators; the vocabulary and
                 config in its metadata. Needs: pip install 'charlstm[onnx]'.
    html         one self-contained page that writes text in the browser, from disk or any
                 static host, fetching nothing: weights embedded (--dtype), a plain-JavaScript
                 stepper, char and byte tokenizers.

    Never replaces --out unless --force. Prints the files written and their size.
    """
    from charlstm.export import export as export_model

    result = export_model(run, format_, out, force=force, dtype=dtype)
    for path in result.files:
        click.echo(f"{path}\t{path.stat().st_size:,} bytes")
