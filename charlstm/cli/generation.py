"""``charlstm sample`` and ``score``: generating text and measuring lines (``chat`` is in ``cli.chat``)."""

from __future__ import annotations

import dataclasses
import json
import secrets
import sys

import click

from charlstm.cli.base import (
    _given,
    adapt_options,
    cache_options,
    check_new_files,
    cli,
    config_file_option,
    config_option,
    deprecated_option,
    device_option,
    force_option,
    json_option,
    out_option,
    run_argument,
)
from charlstm.config import (
    ADAPT_NEEDS,
    AdaptConfig,
    CacheConfig,
    check_cache,
    SampleConfig,
)
from charlstm.errors import CharlstmError, DataError

# --------------------------------------------------------------------------------------- sample


def sample_options(*names: str):
    """The ``SampleConfig`` options ``names``, in that order (see ``config_option``)."""
    def decorate(function):
        for name in reversed(names):
            function = config_option(SampleConfig, name)(function)
        return function

    return decorate


GENERATION_OPTIONS = (
    "length",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "repetition_window",
    "no_repeat_ngram",
)

CACHE_OPTIONS = ("cache_size", "cache_theta", "cache_lambda")


@cli.command()
@config_file_option
@run_argument
@config_option(SampleConfig, "prime", type=str)
@click.option(
    "--prime-file", type=click.Path(dir_okay=False), help="Start from the text of this file (newlines kept)."
)
@click.option(
    "--temperature",
    "temperatures",
    type=float,
    multiple=True,
    help="Sampling temperature; 0 is greedy. Give it several times to compare, one sample set per "
    "value, all with the same seed  [default: 0.8]",
)
@sample_options(
    *GENERATION_OPTIONS, "beam_width", "num_samples", "seed", "stop", "device", "weights", *CACHE_OPTIONS
)
@config_option(SampleConfig, "logit_bias", type=str, metavar="ID=BIAS,...")
@config_option(SampleConfig, "regex", type=str)
@click.option(
    "--json-schema", "json_schema_file", type=click.Path(dir_okay=False),
    help="Write only JSON that follows the JSON Schema in this file (pip install \"charlstm[constrain]\").",
)
@click.option(
    "--echo-prime/--no-echo-prime",
    default=True,
    show_default=True,
    help="Write the prime before the new text.",
)
@click.option(
    "--adapt-to",
    type=click.Path(dir_okay=False),
    help="First adapt the weights to this text by dynamic evaluation (as eval --adapt does), "
    "then sample: text in the manner of that file.",
)
@adapt_options
@out_option("Write the samples to this file, not stdout.")
@deprecated_option("--output", "use --out", type=click.Path())
@force_option
@json_option(help="One JSON line per sample: text, prime, settings, the seed used, tokens, mean log-probability.")
def sample(
    run: str, prime_file, json_schema_file, temperatures, echo_prime: bool, adapt_to, out, output, force, as_json, **options
) -> None:
    """Generate text from RUN.

    Only the text goes to stdout (or --out); several samples are separated by a blank line.
    Filters apply in this order: --repetition-penalty, --no-repeat-ngram, --temperature, --top-k,
    --top-p, --min-p. `--prime -` reads the prime from stdin.

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    if out is not None and output is not None:
        raise click.UsageError("give --out (or the old --output), not both")
    output = out if out is not None else output
    given = _given(options)
    given["prime"] = _read_prime(given.get("prime"), prime_file)
    if "logit_bias" in given:
        given["logit_bias"] = _logit_bias(given["logit_bias"])
    if json_schema_file is not None:
        given["json_schema"] = _read_text(json_schema_file, "--json-schema")
    configs = [SampleConfig.from_dict({**given, "temperature": t}) for t in temperatures]
    configs = configs or [SampleConfig.from_dict(given)]
    adapt_config = AdaptConfig.from_dict(given)
    if adapt_to is None and any(name in given for name in AdaptConfig.field_names()):
        raise click.UsageError(f"{ADAPT_NEEDS} need --adapt-to")
    check_new_files(force, out=output)
    import charlstm
    from charlstm.generation.sampling import encode_prime

    lm = charlstm.load(run, device=configs[0].device, weights=configs[0].weights)
    encode_prime(lm.tokenizer, configs[0].prime)  # a bad prime fails before anything is written
    adapted_to = None
    if adapt_to is not None:
        from charlstm.display import token_progress

        with token_progress("adapting") as on_progress:
            adaptation = lm.adapt(adapt_to, **adapt_config.to_dict(), on_progress=on_progress)
        settings = adaptation.settings
        tuned = (f" (lr {settings.adapt_lr:g} -> {adaptation.tuned_lr:.2g}, decay {settings.adapt_decay:g} -> "
                 f"{adaptation.tuned_decay:.2g})") if settings.adapt_tune else ""
        click.echo(
            f"adapted to {adapt_to}: {adaptation.tokens:,} tokens in {adaptation.seconds:.1f} s, "
            f"{adaptation.loss:.4f} nats/token while adapting{tuned}",
            err=True,
        )
        adapted_to = {"text": adaptation.text, **adaptation.settings.to_dict(), "tuned_lr": adaptation.tuned_lr,
                      "tuned_decay": adaptation.tuned_decay}
    # Several temperatures share one seed (drawn when none is given), so they compare.
    seed = configs[0].seed if configs[0].seed is not None else secrets.randbelow(2**31)

    def write(out) -> None:
        _write_samples(lm, [dataclasses.replace(c, seed=seed) for c in configs], echo_prime, as_json, out, adapted_to)

    if output is None:
        write(sys.stdout)
        return
    import io

    from charlstm.atomic import atomic_write

    def write_file(f) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        write(text)
        text.flush()
        text.detach()

    atomic_write(output, write_file)
    click.echo(f"wrote {output}", err=True)


_GENERATE = (
    *GENERATION_OPTIONS, "temperature", "beam_width", "num_samples", "seed", "stop", "weights",
    *CACHE_OPTIONS,
    "logit_bias", "regex", "json_schema",
)


def _logit_bias(text: str) -> dict[int, float]:
    """``--logit-bias 3=-100,17=2.5`` as {3: -100.0, 17: 2.5}."""
    bias = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        token, _, value = item.partition("=")
        try:
            bias[int(token)] = float(value)
        except ValueError:
            raise click.UsageError(f"--logit-bias takes ID=BIAS pairs separated by commas (got {item!r})") from None
    return bias


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path}: {e.strerror if isinstance(e, OSError) else 'not UTF-8 text'}") from None


def _write_samples(lm, configs: list[SampleConfig], echo_prime: bool, as_json: bool, out, adapted_to=None) -> None:
    """Write the samples of each config (one per temperature) to ``out``: text, the first sample
    of a set streamed as it is written and the others after it, separated by a blank line; or one
    JSON line per sample."""
    labelled = len(configs) > 1 and not as_json
    for index, config in enumerate(configs):
        settings = {name: getattr(config, name) for name in _GENERATE}
        if labelled:
            out.write(("\n" if index else "") + f"== temperature {config.temperature:g} ==\n")
        if as_json:
            completions = lm.generate(config.prime, **settings, details=True)
            for completion in completions if isinstance(completions, list) else [completions]:
                record = completion.to_dict()
                if adapted_to is not None:
                    record["adapted_to"] = adapted_to
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            prime = config.prime if echo_prime else ""
            if config.num_samples == 1:
                pieces = lm.stream(config.prime, **{k: v for k, v in settings.items() if k != "num_samples"})
                out.write(prime)
                for piece in pieces:
                    out.write(piece)
                    if config.beam_width is None:
                        out.flush()
            else:
                texts = lm.generate(config.prime, **settings)
                out.write(prime + texts[0])
                for text in texts[1:]:
                    out.write("\n\n" + prime + text)
            out.write("\n")
        out.flush()


def _read_prime(prime: str | None, prime_file: str | None) -> str:
    """The prime from --prime TEXT, --prime - (stdin) or --prime-file FILE (newlines kept)."""
    if prime is not None and prime_file is not None:
        raise click.UsageError("give --prime or --prime-file, not both")
    from charlstm.data.text import decode_input

    if prime_file is not None:
        from pathlib import Path

        if not Path(prime_file).is_file():
            raise CharlstmError(f"{prime_file}: no such file" + (" (it is a directory)" if Path(prime_file).is_dir() else ""))
        try:
            with open(prime_file, "rb") as f:
                return decode_input(f.read(), f"--prime-file {prime_file}")
        except OSError as e:
            raise CharlstmError(f"--prime-file {prime_file}: cannot read ({e.strerror})") from None
    if prime == "-":
        return decode_input(sys.stdin.buffer.read(), "--prime - (stdin)")
    return prime or ""


# ---------------------------------------------------------------------------------------- score


@cli.command()
@config_file_option
@run_argument
@click.argument("files", nargs=-1, metavar="[FILE]...", type=click.Path())
@deprecated_option("--file", "give FILE as an argument: charlstm score RUN FILE", type=click.Path(dir_okay=False))
@json_option
@device_option
@config_option(SampleConfig, "weights")
@cache_options
def score(
    run: str, files: tuple[str, ...], file: str | None, as_json: bool, device: str, weights: str | None, **options
) -> None:
    """Score each line of FILEs under the model: its log-probability (nats) and bits per
    character, to rank candidates or find unusual lines. Each line is scored on its own, from the
    start of a text; blank lines are kept (no tokens, no score).

    FILE: files, directories or quoted patterns, as train takes them; none or - reads stdin.

    With --cache-size N the lines are also read in order by a neural cache of the last N tokens,
    so a line that repeats an earlier one scores better.

    RUN: a run directory, a checkpoint file or an exported folder.
    """
    import charlstm

    cache_config = CacheConfig.from_dict(_given(options))
    check_cache(cache_config)
    if file is not None:
        files = (*files, file)
    lm = charlstm.load(run, device=device, weights=weights or "fp32")
    texts = _score_texts(files or ("-",))
    _warn_unknown(lm.tokenizer, texts)
    from charlstm.display import print_scores, token_progress

    results = []
    with token_progress("scoring") as on_progress:
        for text in texts:
            results += lm.score(text, on_progress=on_progress, **cache_config.to_dict())
    print_scores(results, as_json)


def _score_texts(files: tuple[str, ...]) -> list[str]:
    """The text of each file FILE arguments name (``-``: stdin), in order."""
    from charlstm.api import text_source
    from charlstm.data.text import decode_input

    texts = []
    for arg in files:
        if arg == "-":
            texts.append(decode_input(sys.stdin.buffer.read(), "stdin"))
            continue
        source = text_source(arg)
        texts += [s.read() for s in (source.sources() if hasattr(source, "sources") else [source])]
    return texts


def _warn_unknown(tokenizer, texts: list[str]) -> None:
    """One line on stderr when the text holds characters the model never saw (scored as the
    unknown symbol, as eval counts them)."""
    if tokenizer.kind != "char":
        return  # byte and subword models can read every character
    unknown = sorted({c for text in texts for c in tokenizer.unknown_chars(text)})
    if unknown:
        count = sum(text.count(c) for text in texts for c in unknown)
        shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        click.echo(
            f"warning: {count:,} characters the model never saw are scored as unknown: {shown}", err=True
        )
