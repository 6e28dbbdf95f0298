"""Fuzz ``decompress``: structured mutations of a valid ``.clstm`` file (bit flips, cuts,
insertions, header bytes, a checksum made to match again) read by a tiny model.

Invariant: the original bytes exactly, or one ``CharlstmError``; never another exception, never
wrong bytes.
"""

from __future__ import annotations

import struct
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["charlstm"]):
    import charlstm
    from charlstm.errors import CharlstmError

_STATE: dict = {}


def _setup():
    import tempfile

    from charlstm.config import ModelShape, TrainConfig
    from charlstm.data.text import TextSource, builtin_text
    from charlstm.training.trainer import train

    out = tempfile.mkdtemp(prefix="charlstm-fuzz-decompress-") + "/tiny"
    config = TrainConfig(batch_size=4, bptt=16, max_steps=2, eval_every=2, device="cpu", seed=1)
    train(TextSource.from_text(builtin_text()[:3000], "small", "small"), config,
          ModelShape(embedding_dim=8, hidden_size=16, num_layers=1), out=out)
    lm = charlstm.load(out, device="cpu")
    data = builtin_text()[:300].encode() + b"\xff\xfe"
    _STATE.update(lm=lm, data=data, blob=lm.compress(data, streams=2, threads=1))


def test_one_input(raw: bytes) -> None:
    if not _STATE:
        _setup()
    fdp = atheris.FuzzedDataProvider(raw)
    blob = bytearray(_STATE["blob"])
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        kind = fdp.ConsumeIntInRange(0, 3)
        at = fdp.ConsumeIntInRange(0, len(blob) - 1) if blob else 0
        if kind == 0 and blob:
            blob[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif kind == 1:
            del blob[at:]
        elif kind == 2:
            blob[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16))
        elif blob:
            blob[min(at, 40) % len(blob)] = fdp.ConsumeIntInRange(0, 255)
    if fdp.ConsumeBool() and len(blob) > 2:  # make the check match again (format 3: the CRC-32's low 16 bits)
        blob[-2:] = struct.pack("<H", zlib.crc32(bytes(blob[:-2])) & 0xFFFF)
    try:
        assert _STATE["lm"].decompress(bytes(blob)) == _STATE["data"]
    except CharlstmError as e:
        assert "\n" not in str(e)


if __name__ == "__main__":
    from tests.fuzz._harness import main

    main(test_one_input, short_runs=200)
    sys.exit(0)
