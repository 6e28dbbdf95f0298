"""Fuzz the checkpoint loader: ``load_checkpoint`` + ``model_from_checkpoint`` (and the checks a
resume makes) on checkpoints made from a real tiny one by structured mutations.

Mutating the file's bytes alone rarely gets past the zip and the checksum, so the fuzzer's bytes
drive changes to the payload itself (``atheris.FuzzedDataProvider``): replace or delete any value
at any depth (config values, tokenizer records including SentencePiece model bytes, training
state, optimizer), swap in tensors of other dtypes, shapes and strides (zero strides that claim
far more than they store), then save it with a valid checksum (what someone crafting a file
would do) or keep the old one, and sometimes flip or cut bytes of the file as well.

Invariant: a result (a model that runs one step) or one ``CharlstmError``.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["charlstm"]):
    import torch

    from charlstm.runs.checkpoint import (
        TrainState,
        load_checkpoint,
        make_payload,
        model_from_checkpoint,
        save_checkpoint,
    )
    from charlstm.runs.checks import check_model, check_train_state
    from charlstm.config import ModelConfig, ModelShape, TrainConfig
    from charlstm.errors import CharlstmError
    from charlstm.model import LanguageModel
    from charlstm.data.tokenizers import CharTokenizer, SentencePieceTokenizer

torch.set_num_threads(1)
_DIR = tempfile.mkdtemp(prefix="charlstm-fuzz-checkpoint-")
_PATH = os.path.join(_DIR, "fuzzed.pt")
_BASES: list[dict] = []
_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool, torch.complex64]


def _base_payloads() -> list[dict]:
    """Two tiny real payloads: char tokenizer with an LSTM, SentencePiece with a GRU."""
    if _BASES:
        return _BASES
    from charlstm.data.text import builtin_text

    text = builtin_text()[:60_000]
    for tokenizer, shape in [
        (CharTokenizer.train(text[:2000]), ModelShape(embedding_dim=4, hidden_size=6, num_layers=2)),
        (SentencePieceTokenizer.train(text, "bpe", 400), ModelShape(cell="gru", embedding_dim=3, hidden_size=3, num_layers=1)),
    ]:
        torch.manual_seed(0)
        config = ModelConfig.of(shape, tokenizer.vocab_size)
        model = LanguageModel(config)
        optimizer = torch.optim.AdamW(model.parameters())
        model(torch.zeros(2, 1, dtype=torch.long))[0].sum().backward()
        optimizer.step()  # the optimizer holds state, as a real checkpoint's does
        hidden = [t.detach() for t in model.init_hidden(2)]
        state = TrainState(step=1, window=1, tokens=2, elapsed=0.5, best_val_loss=3.0,
                           metrics=[{"step": 1, "val_loss": 3.0, "train_loss": None}],
                           hidden_by_rank=[hidden], torch_rng_by_rank=[torch.get_rng_state()])
        corpus = {"name": "t", "path": None, "builtin": True, "encoding_errors": "strict", "chars": 1, "bytes": 1,
                  "replacements": 0, "sha256": "0" * 64}
        payload = make_payload(model=model, model_config=config, train_config=TrainConfig(), tokenizer=tokenizer,
                               optimizer=optimizer, train_state=state, corpus=corpus)
        buffer = io.BytesIO()
        torch.save(payload, buffer)  # a deep copy
        buffer.seek(0)
        _BASES.append(buffer.getvalue())
    return _BASES


def _value(fdp, depth: int = 0):
    """Any value a checkpoint could hold (and some it never does)."""
    kind = fdp.ConsumeIntInRange(0, 12 if depth < 2 else 8)
    if kind == 0:
        return fdp.ConsumeIntInRange(-(2**63), 2**63)
    if kind == 1:
        return fdp.ConsumeIntInRange(-2, 70_000)
    if kind == 2:
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.PickValueInList([float("nan"), float("inf"), -0.0, 1e308])
    if kind == 3:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 40))
    if kind == 4:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
    if kind == 5:
        return fdp.ConsumeBool()
    if kind == 6:
        return None
    if kind in (7, 8):
        return _tensor(fdp)
    if kind in (9, 10):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 4))]
    return {fdp.ConsumeUnicode(8) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-3, 3): _value(fdp, depth + 1)
            for _ in range(fdp.ConsumeIntInRange(0, 4))}


def _tensor(fdp, like: torch.Tensor | None = None) -> torch.Tensor:
    dtype = fdp.PickValueInList(_DTYPES)
    if like is not None and fdp.ConsumeBool():
        shape = list(like.shape)
        if shape and fdp.ConsumeBool():
            shape[fdp.ConsumeIntInRange(0, len(shape) - 1)] += fdp.ConsumeIntInRange(-1, 1)
    else:
        shape = [fdp.ConsumeIntInRange(0, 5) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    shape = [max(0, s) for s in shape]
    t = torch.zeros(shape, dtype=torch.float64).uniform_(-2, 2).to(dtype)
    choice = fdp.ConsumeIntInRange(0, 5)
    if choice == 0 and t.numel():  # a stride of 0: few bytes pass for many elements
        big = [fdp.ConsumeIntInRange(1, 10**6) for _ in range(fdp.ConsumeIntInRange(1, 3))]  # < 2**63
        t = t.reshape(-1)[:1].as_strided(big, [0] * len(big))
    elif choice == 1 and t.is_floating_point() and t.numel():
        t.reshape(-1)[0] = fdp.PickValueInList([float("nan"), float("inf"), -float("inf")])
    elif choice == 2 and t.dim() >= 2:
        t = t.transpose(0, 1)  # not contiguous
    elif choice == 3 and t.numel() > 1:
        t = t.reshape(-1)[1:]  # an offset into its storage
    return t


def _containers(node, path=()):
    """Every (container, key) pair in the payload, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield node, key
            yield from _containers(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield node, i
            yield from _containers(value, path + (i,))


def _mutate(fdp, payload: dict) -> None:
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        spots = list(_containers(payload))
        container, key = spots[fdp.ConsumeIntInRange(0, len(spots) - 1)]
        value = container[key]
        op = fdp.ConsumeIntInRange(0, 7)
        if op == 0 and isinstance(container, dict):
            del container[key]
        elif op == 1 and isinstance(value, torch.Tensor):
            container[key] = _tensor(fdp, like=value)
        elif op == 2 and isinstance(value, (bytes, str)) and value:  # SentencePiece bytes, vocabularies
            data = bytearray(value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass"))
            for _ in range(fdp.ConsumeIntInRange(1, 8)):
                at = fdp.ConsumeIntInRange(0, len(data) - 1)
                data[at] = fdp.ConsumeIntInRange(0, 255)
            if fdp.ConsumeBool():
                data = data[: fdp.ConsumeIntInRange(0, len(data))]
            container[key] = bytes(data) if isinstance(value, bytes) else bytes(data).decode("utf-8", "replace")
        elif op == 3 and isinstance(value, int) and not isinstance(value, bool):
            container[key] = fdp.PickValueInList([value + 1, value - 1, value * 1000, -value, 0, 2**31, True, float(value), str(value)])
        elif op == 4 and isinstance(container, dict):
            container[fdp.ConsumeUnicode(10)] = _value(fdp)
        else:
            container[key] = _value(fdp)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    bases = _base_payloads()
    payload = torch.load(io.BytesIO(bases[fdp.ConsumeIntInRange(0, len(bases) - 1)]), weights_only=True)
    _mutate(fdp, payload)
    how = fdp.ConsumeIntInRange(0, 9)
    try:
        if how < 7:
            save_checkpoint(_PATH, payload)  # a valid checksum: the checks behind it are reached
        else:
            raise ValueError
    except (ValueError, CharlstmError, RuntimeError, TypeError):  # what cannot be saved with a checksum
        torch.save(payload, _PATH)
    if how >= 8:  # and damage the file's bytes too
        raw = bytearray(open(_PATH, "rb").read())
        for _ in range(fdp.ConsumeIntInRange(1, 6)):
            raw[fdp.ConsumeIntInRange(0, len(raw) - 1)] = fdp.ConsumeIntInRange(0, 255)
        if fdp.ConsumeBool():
            raw = raw[: fdp.ConsumeIntInRange(0, len(raw))]
        open(_PATH, "wb").write(bytes(raw))
    try:
        loaded = load_checkpoint(_PATH)
        model, tokenizer = model_from_checkpoint(loaded, "cpu", _PATH)
        assert check_model(loaded, _PATH)[0] == model.config
        logits, _ = model(torch.zeros(1, 1, dtype=torch.long))
        assert logits.shape == (1, 1, tokenizer.vocab_size)
        check_train_state(loaded, _PATH)
        TrainState.from_checkpoint(loaded, 10)
    except CharlstmError:
        pass


if __name__ == "__main__":
    from tests.fuzz._harness import main

    _base_payloads()
    main(test_one_input, short_runs=150)
    sys.exit(0)
