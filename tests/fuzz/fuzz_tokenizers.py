"""Fuzz the tokenizers: char and byte round trips on arbitrary Unicode (lone surrogates
included), a char vocabulary from one text used on another, and decoding of arbitrary id lists
(negative, out of range, huge) by char, byte and SentencePiece tokenizers.

Invariant: a result or one ``CharlstmError``. Round trips must give back the text; a char
tokenizer gives U+FFFD exactly where a character is not in its vocabulary.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["charlstm"]):
    from charlstm.errors import CharlstmError
    from charlstm.data.tokenizers import (
        UNKNOWN_TEXT,
        ByteTokenizer,
        CharTokenizer,
        SentencePieceTokenizer,
        tokenizer_from_dict,
    )

_SP = None


def _sentencepiece() -> SentencePieceTokenizer:
    global _SP
    if _SP is None:
        from charlstm.data.text import builtin_text

        _SP = SentencePieceTokenizer.train(builtin_text()[:100_000], "bpe", 400)
    return _SP


def _ids(fdp, vocab_size: int) -> list[int]:
    ids = []
    for _ in range(fdp.ConsumeIntInRange(0, 64)):
        kind = fdp.ConsumeIntInRange(0, 3)
        if kind == 0:
            ids.append(fdp.ConsumeIntInRange(0, vocab_size - 1))
        elif kind == 1:
            ids.append(fdp.ConsumeIntInRange(-(2**40), 2**40))
        elif kind == 2:
            ids.append(vocab_size + fdp.ConsumeIntInRange(0, 3))
        else:
            ids.append(-fdp.ConsumeIntInRange(1, 3))
    return ids


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 4)
    if target == 0:  # char: train on one text, round-trip it, encode another
        text = fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 200)) if fdp.ConsumeBool() else fdp.ConsumeUnicode(200)
        other = fdp.ConsumeUnicode(100)
        tok = CharTokenizer.train(text)
        assert tok.decode(tok.encode(text)) == text
        again = tokenizer_from_dict(tok.to_dict())
        expected = "".join(c if c in set(text) else UNKNOWN_TEXT for c in other)
        assert again.decode(again.encode(other)) == expected
        assert [c for c in tok.unknown_chars(other)] == sorted(set(other) - set(text))
    elif target == 1:  # byte round trip
        text = fdp.ConsumeUnicode(300)
        tok = ByteTokenizer()
        out = tok.decode(tok.encode(text))
        assert out == text or any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    else:  # decoding arbitrary ids
        tok = [CharTokenizer("abc\u00e9\U0001f600"), ByteTokenizer(), _sentencepiece()][target - 2]
        ids = _ids(fdp, tok.vocab_size)
        try:
            out = tok.decode(ids)
        except CharlstmError:
            assert any(not 0 <= i < tok.vocab_size for i in ids), ids
            return
        assert isinstance(out, str)
        assert all(0 <= i < tok.vocab_size for i in ids), ("decoded ids outside the vocabulary", ids)
        if target == 4:  # SentencePiece: encoding text gives ids that decode back
            text = fdp.ConsumeUnicodeNoSurrogates(100)
            assert tok.decode(tok.encode(text)) == text.replace("\u2581", " ")


if __name__ == "__main__":
    from tests.fuzz._harness import main

    _sentencepiece()  # before fuzzing starts: training is not part of an input's time
    main(test_one_input, short_runs=1000)
    sys.exit(0)
