"""Fuzz the text reader: ``TextSource`` on arbitrary bytes, read in chunks of 1 to 16 bytes so
that every chunk boundary (inside a UTF-8 sequence, a BOM, a CRLF) is exercised.

Invariant: a result or one ``DataError``. A result must be what Python's own decoder makes of the
whole file (BOM dropped; U+FFFD per invalid sequence with ``replace``), with exact stats; a
refusal in strict mode must name the exact offset of the first bad byte, as reading it whole does.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["charlstm"]):
    import charlstm.data.text as text
    from charlstm.errors import CharlstmError, DataError

_DIR = tempfile.mkdtemp(prefix="charlstm-fuzz-text-")
_PATH = os.path.join(_DIR, "input.txt")


def _read(path, errors, chunk):
    text.READ_BYTES = chunk
    stats = text.TextStats()
    try:
        return text.TextSource.from_file(path, errors).read(stats), stats, None
    except DataError as e:
        return None, stats, str(e)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    chunk = fdp.ConsumeIntInRange(1, 16)
    errors = "replace" if fdp.ConsumeBool() else "strict"
    content = fdp.ConsumeBytes(fdp.remaining_bytes())
    with open(_PATH, "wb") as f:
        f.write(content)
    try:
        result, stats, refused = _read(_PATH, errors, chunk)
        whole, whole_stats, whole_refused = _read(_PATH, errors, 1 << 20)
    except CharlstmError:
        raise AssertionError("a CharlstmError other than DataError")  # noqa: B904
    assert (result, refused) == (whole, whole_refused), (chunk, result, refused, whole, whole_refused)
    if result is None:
        return
    assert stats == whole_stats, (stats, whole_stats)
    body = content[3:] if content.startswith(codecs.BOM_UTF8) else content
    expected = body.decode("utf-8", "replace" if errors == "replace" else "strict")
    assert result == expected, (result, expected)
    assert stats.chars == len(result) and stats.bytes == len(result.encode("utf-8", "surrogatepass"))
    assert stats.sha256 == hashlib.sha256(content).hexdigest()
    assert b"\x00" not in body and result.strip()


if __name__ == "__main__":
    from tests.fuzz._harness import main

    main(test_one_input, short_runs=2000)
    sys.exit(0)
