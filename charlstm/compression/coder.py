"""Compress and decompress: the model's probabilities, range-coded by ``constriction``.

The coder is constriction's range coder (``stream.queue.RangeEncoder`` / ``RangeDecoder``), a
queue: symbols come out in the order they went in, so each step's probabilities are used as soon
as they are computed and then dropped. One call per step codes the B streams' symbols, each with
its own row of probabilities (``stream.model.Categorical(perfect=False)``), quantised so that
every symbol keeps a nonzero share: a token the model finds impossible still codes, at a cost.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager

import numpy as np
import torch

from charlstm.stepper import TokenStepper
from charlstm.compression import format as fmt
from charlstm.compression.settings import CompressConfig, layout
from charlstm.compression.streams import Predictor, fix_theta, new_cache, probe_digest, read_context
from charlstm.compression.tokens import from_tokens, pack_side, to_tokens, unpack_side
from charlstm.config import AdaptConfig, CacheConfig
from charlstm.errors import CharlstmError, CompressedFileError, ConfigError
from charlstm.lnlstm.kernel import in_python

INSTALL = 'compressing needs the constriction package: pip install "charlstm[compress]"'
PROGRESS_STEPS = 256  # steps between two on_progress calls


def _constriction():
    try:
        import constriction
    except ImportError:
        raise CharlstmError(INSTALL) from None
    return constriction


@contextmanager
def _threads(n: int):
    """torch's compute threads set to ``n`` for the block (the floats depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _evaluating(model):
    """``model`` in eval mode for the block (a model in train mode would drop out at random, and
    the decoder's draws would not be the encoder's); its mode is put back afterwards. An LN-LSTM's
    windows run in Python (``lnlstm.kernel.in_python``): whether a machine could build the C++
    recurrence then changes no float, so a file decodes where its encoder's torch computes alike."""
    was_training = model.training
    model.eval()
    try:
        with in_python():
            yield
    finally:
        model.train(was_training)


def _kernels() -> str:
    return torch.backends.cpu.get_cpu_capability()


def _aligned(version: int) -> bool:
    """Whether one stream's --adapt computes eval's probabilities from the second token on
    (``Predictor``'s ``align``) in a file of format ``version``."""
    return version >= 3


def _start(model, tokenizer, streams: int, weights: str, adapt, cache_config, context: bytes | None,
           align: bool, stepper=None) -> Predictor:
    """The B streams ready for the text's first tokens: after the context (its last state in
    every stream, the cache filled, with ``adapt`` learnt from), or from a zero state after a
    newline."""
    from charlstm.data.tokenizers import default_start_id

    cache = new_cache(cache_config, model.config.vocab_size)
    hidden, last, step = None, None, None
    if context:
        hidden, last, step = read_context(model, to_tokens(context, tokenizer)[0], adapt, cache)
    if last is None:
        fix_theta(cache)
        last = default_start_id(tokenizer)
    return Predictor(model, streams, weights=weights, adapt=adapt, cache=cache, hidden=hidden, start=last, step=step,
                     align=align, stepper=stepper)


def compress(model, tokenizer, data: bytes, config: CompressConfig, *, adapt: AdaptConfig | None = None,
             cache: CacheConfig | None = None, context: bytes | None = None, on_progress=None) -> bytes:
    """``data`` coded with ``model`` (on the CPU; its weights are left as they are): the bytes of
    a ``.clstm`` file. ``adapt``, ``cache`` and ``context`` as ``charlstm eval`` takes them."""
    constriction = _constriction()
    cache = cache if cache is not None and cache.cache_size else None
    adapt = _as_used(adapt, model)
    ids, side = to_tokens(data, tokenizer)
    streams, part = layout(len(ids), config.streams, cache=cache is not None, adapt=adapt is not None)
    grid = np.zeros(streams * part, dtype=np.int64)
    grid[: len(ids)] = ids
    grid = grid.reshape(streams, part)  # (B, part): stream b codes ids[b*part : (b+1)*part]
    last = len(ids) - (streams - 1) * part  # the last stream's length
    align = _aligned(fmt.FORMAT_VERSION)
    with _threads(config.threads), _evaluating(model), torch.no_grad():
        work = model if adapt is None else copy.deepcopy(model)
        stepper = _static_stepper(model, config.weights, adapt)
        probe = probe_digest(model, streams, weights=config.weights, adapt=adapt, cache=cache, align=align, stepper=stepper)
        predictor = _start(work, tokenizer, streams, config.weights, adapt, cache, context, align, stepper)
        encoder = constriction.stream.queue.RangeEncoder()
        family = constriction.stream.model.Categorical(perfect=False)
        for t in range(part):
            active = streams if t < last else streams - 1
            p = predictor.probabilities()  # (B, V)
            encoder.encode(grid[:active, t].astype(np.int32), family, p[:active])
            predictor.advance(grid[:, t], active)
            if on_progress is not None and (t + 1) % PROGRESS_STEPS == 0:
                on_progress(PROGRESS_STEPS * streams)
        words = encoder.get_compressed()
    header = fmt.Header(
        version=fmt.FORMAT_VERSION, model=fmt.model_digest(model, tokenizer), weights=config.weights, adapt=None if adapt is None else adapt.to_dict(),
        cache=None if cache is None else cache.to_dict(),
        context=None if context is None else fmt.digest(context),
        streams=streams, part=part, tokens=len(ids), threads=config.threads, torch=torch.__version__,
        kernels=_kernels(), coder=_coder_version(), probe=probe, length=len(data),
        sha256=fmt.digest(data), side=0, words=len(words),
    )
    packed = pack_side(side)
    header = fmt.Header(**{**header.__dict__, "side": len(packed)})
    return fmt.write(header, packed, words)


def decompress(model, tokenizer, blob: bytes, *, context: bytes | None = None, name: str = "the file",
               on_progress=None) -> bytes:
    """The original bytes of a ``.clstm`` file's ``blob``, checked against its SHA-256; anything
    that keeps it from being decoded exactly is one ``CompressedFileError`` naming ``name``."""
    constriction = _constriction()
    header, packed, words = fmt.read(blob, name)
    adapt, cache = _check(header, model, tokenizer, context, name)
    try:
        side = unpack_side(packed, raw=header.version >= 3)
    except CompressedFileError:
        raise CompressedFileError(f"{name}: damaged (its side channel cannot be read); nothing written") from None
    streams, part = header.streams, header.part
    last = header.tokens - (streams - 1) * part
    try:
        out = np.zeros((streams, part), dtype=np.int64)  # (B, part)
    except MemoryError:
        raise CompressedFileError(f"{name}: damaged (it claims more tokens than fit in memory); nothing written") from None
    with _threads(header.threads), _evaluating(model), torch.no_grad():
        align = _aligned(header.version)
        stepper = _static_stepper(model, header.weights, adapt)
        probe = probe_digest(model, streams, weights=header.weights, adapt=adapt, cache=cache, align=align, stepper=stepper)
        if not fmt.same(probe, header.probe):
            raise CompressedFileError(_other_floats(header, name))
        work = model if adapt is None else copy.deepcopy(model)
        predictor = _start(work, tokenizer, streams, header.weights, adapt, cache, context, align, stepper)
        decoder = constriction.stream.queue.RangeDecoder(words)
        family = constriction.stream.model.Categorical(perfect=False)
        for t in range(part):
            active = streams if t < last else streams - 1
            p = predictor.probabilities()  # (B, V)
            try:
                out[:active, t] = decoder.decode(family, p[:active])
            except (ValueError, RuntimeError, AssertionError):
                raise CompressedFileError(f"{name}: damaged (its coded text cannot be decoded); nothing written") from None
            predictor.advance(out[:, t], active)
            if on_progress is not None and (t + 1) % PROGRESS_STEPS == 0:
                on_progress(PROGRESS_STEPS * streams)
    data = from_tokens(out.reshape(-1)[: header.tokens], side, tokenizer.token_bytes(), tokenizer.unk_id)
    if len(data) != header.length or not fmt.same(fmt.digest(data), header.sha256):
        raise CompressedFileError(
            f"{name}: what was decoded does not match its checksum ({_made_with(header)}; here "
            f"{_here()}); nothing written"
        )
    return data


def _static_stepper(model, weights: str, adapt: AdaptConfig | None) -> TokenStepper | None:
    """Without ``adapt`` the weights never change: one stepper serves the probe and the text."""
    return TokenStepper(model, weights) if adapt is None else None


def _primed(adapt: AdaptConfig | None) -> bool:
    return adapt is not None and adapt.adapt_method == "rms" and adapt.adapt_prior > 0


def _as_used(adapt: AdaptConfig | None, model) -> AdaptConfig | None:
    """``adapt`` as the file will record it: no prior where there is none to use (a model
    without the training's second moments, or sgd)."""
    if adapt is not None and adapt.adapt_prior and not (_primed(adapt) and model.second_moments):
        return dataclasses.replace(adapt, adapt_prior=0)
    return adapt


def _coder_version() -> str:
    from importlib.metadata import version

    return version("constriction")


def _check(header: fmt.Header, model, tokenizer, context: bytes | None, name: str):
    """The refusals that need no decoding: another model, context, coder or settings."""
    digest = fmt.model_digest(model, tokenizer)
    if not fmt.same(digest, header.model):
        raise CompressedFileError(
            f"{name}: made with another model (weights {header.model[:12]}; this one's are {digest[:12]}): "
            "decompress it with the model that compressed it"
        )
    given = None if context is None else fmt.digest(context)
    if (given is None) != (header.context is None) or (given is not None and not fmt.same(given, header.context)):
        wanted = "no --context" if header.context is None else f"the --context it was made with (SHA-256 {header.context[:12]})"
        raise CompressedFileError(f"{name}: made with {wanted}; give the same to decompress it")
    if header.coder != _coder_version():
        raise CompressedFileError(
            f"{name}: coded with constriction {header.coder} (this is {_coder_version()}): "
            f'pip install "constriction=={header.coder}" to decompress it'
        )
    try:
        adapt = None if header.adapt is None else AdaptConfig(**{**_BEFORE, **header.adapt})
        cache = None if header.cache is None else CacheConfig(**header.cache)
    except (TypeError, ConfigError):
        raise CompressedFileError(f"{name}: damaged (its settings cannot be read); nothing written") from None
    if header.weights not in CompressConfig.__dataclass_fields__["weights"].metadata["choices"]:
        raise CompressedFileError(f"{name}: damaged (its settings cannot be read); nothing written")
    if _primed(adapt) and not model.second_moments:
        raise CompressedFileError(
            f"{name}: its --adapt started from the training's mean squares (--adapt-prior {adapt.adapt_prior}), "
            "which this model lacks (an exported one has none): decompress it with the run directory that "
            "compressed it; nothing written"
        )
    return adapt, cache


# What a file's --adapt did before a setting was recorded: the whole window, fixed lr and decay.
_BEFORE = {"adapt_depth": 1 << 30, "adapt_tune": 0.0, "adapt_prior": 0}


def _made_with(header: fmt.Header) -> str:
    threads = f"{header.threads} thread" + ("s" if header.threads != 1 else "")
    return f"made with torch {header.torch} on {header.kernels} kernels, {threads}"


def _here() -> str:
    return f"torch {torch.__version__} on {_kernels()} kernels"


def _other_floats(header: fmt.Header, name: str) -> str:
    return (
        f"{name}: {_made_with(header)}; this machine computes other probabilities ({_here()}): "
        f"decompress where ATEN_CPU_CAPABILITY={header.kernels.lower()} and torch {header.torch} give the same "
        "floats (the same kernels), e.g. the machine that compressed it; nothing written"
    )
