"""Tokenizers: text <-> integer ids, vectorised with numpy.

Every tokenizer implements the same small protocol (``Tokenizer``). Each one can also give the
UTF-8 bytes of every id (``token_bytes``), which lets sampling stream text one token at a time and
lets evaluation count characters and bytes the same way for every tokenizer.
"""

from __future__ import annotations

import io
import itertools
import re
from typing import Protocol

import numpy as np

from charlstm.errors import ConfigError, DataError

# Python loops run per chunk of this many characters, never per character.
_CHUNK_CHARS = 1 << 20
_UNICODE_SIZE = 0x110000
UNKNOWN_TEXT = "\ufffd"  # what an unknown id decodes to


class Tokenizer(Protocol):
    kind: str
    vocab_size: int
    unk_id: int | None  # id that unknown characters map to, or None when nothing is unknown
    # True when encode(a + b) == encode(a) + encode(b) for any cut: text can be encoded in
    # arbitrary pieces. Subword tokenizers are cut after newlines instead.
    cuts_anywhere: bool

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids) -> str: ...

    def token_bytes(self) -> list[bytes]: ...

    def to_dict(self) -> dict: ...


def id_dtype(vocab_size: int) -> np.dtype:
    """The one rule for token ids in memory and in token files: the smallest integer type that
    holds every id and that torch can index with (uint8, int16 or int32; torch has no uint16
    indexing)."""
    return np.dtype(np.uint8 if vocab_size <= 256 else np.int16 if vocab_size <= 32768 else np.int32)


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: a lone surrogate (possible in a command-line argument) still gets a code point
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def checked_ids(ids, vocab_size: int) -> np.ndarray:
    """``ids`` as an int64 array, once every one is a whole number in ``0..vocab_size-1`` (a
    tokenizer never makes others; decoding one would index past its tables)."""
    array = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.dtype.kind not in "iu":
        if array.dtype.kind != "O" or not all(type(i) is int for i in array.ravel().tolist()):
            raise DataError(f"token ids must be whole numbers (got {array.dtype} values)")
        values = array.ravel().tolist()
        bad = next((i for i in values if not 0 <= i < vocab_size), None)
        if bad is not None:
            raise DataError(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})")
        return np.asarray(values, dtype=np.int64).reshape(array.shape)
    low, high = array.min(), array.max()
    if low < 0 or high >= vocab_size:
        raise DataError(f"token id {low if low < 0 else high} is outside the vocabulary (0..{vocab_size - 1})")
    return array.astype(np.int64, copy=False)


def _chunks(text, size: int = _CHUNK_CHARS):
    """``text`` (a string, or an iterable of strings) in pieces of at most ``size`` characters."""
    for part in [text] if isinstance(text, str) else text:
        for start in range(0, len(part), size):
            yield part[start : start + size]


class CharTokenizer:
    """One id per Unicode character seen in the training text, plus one id for anything else."""

    kind = "char"
    cuts_anywhere = True

    def __init__(self, chars: str):
        self.chars = chars
        self.unk_id = len(chars)
        self.vocab_size = len(chars) + 1
        self._dtype = id_dtype(self.vocab_size)
        self._lut: np.ndarray | None = None

    @classmethod
    def train(cls, text) -> CharTokenizer:
        """The characters of ``text``: a string, or an iterable of strings read once."""
        seen = np.zeros(_UNICODE_SIZE, dtype=bool)
        for chunk in _chunks(text):
            if chunk.isascii():  # the common case: one byte per character, 4x less to scan
                seen[:128] |= np.bincount(np.frombuffer(chunk.encode("ascii"), np.uint8), minlength=128) > 0
            else:
                seen[np.unique(_code_points(chunk))] = True
        return cls("".join(map(chr, np.flatnonzero(seen).tolist())))

    def _table(self) -> np.ndarray:
        if self._lut is None:
            lut = np.full(_UNICODE_SIZE, self.unk_id, dtype=self._dtype)
            lut[_code_points(self.chars)] = np.arange(len(self.chars), dtype=self._dtype)
            self._lut = lut
        return self._lut

    def encode(self, text: str) -> np.ndarray:
        lut = self._table()
        if self._dtype == np.uint8 and text.isascii():
            # The common case, at memory speed: ASCII bytes mapped to ids by bytes.translate.
            return np.frombuffer(text.encode("ascii").translate(lut[:256].tobytes()), np.uint8).copy()
        out = np.empty(len(text), dtype=self._dtype)
        for start in range(0, len(text), _CHUNK_CHARS):
            chunk = text[start : start + _CHUNK_CHARS]
            if chunk.isascii():  # index with bytes, not 4-byte code points
                out[start : start + len(chunk)] = lut[:128][np.frombuffer(chunk.encode("ascii"), np.uint8)]
            else:
                out[start : start + len(chunk)] = lut[_code_points(chunk)]
        return out

    def decode(self, ids) -> str:
        table = self.chars + UNKNOWN_TEXT
        return "".join(table[i] for i in checked_ids(ids, self.vocab_size).tolist())

    def token_bytes(self) -> list[bytes]:
        return [c.encode("utf-8", "surrogatepass") for c in self.chars] + [UNKNOWN_TEXT.encode()]

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary."""
        ids = self.encode(text)
        positions = np.flatnonzero(ids == self.unk_id)
        return sorted({text[i] for i in positions.tolist()})

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """UTF-8 bytes: 256 ids, nothing is ever unknown."""

    kind = "byte"
    cuts_anywhere = True
    vocab_size = 256
    unk_id = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8).copy()

    def decode(self, ids) -> str:
        return checked_ids(ids, 256).astype(np.uint8).tobytes().decode("utf-8", "replace")

    def token_bytes(self) -> list[bytes]:
        return [bytes([i]) for i in range(256)]

    def to_dict(self) -> dict:
        return {"kind": self.kind}


# SentencePiece skips training sentences longer than max_sentence_length bytes, and fails with a
# bare "[!sentences_.empty()]" when that leaves none; so long lines are cut to fit.
_SP_MAX_SENTENCE_BYTES = 8192
_SP_SENTENCE_CHARS = _SP_MAX_SENTENCE_BYTES // 4
_SP_MAX_TRAIN_SENTENCES = 2_000_000
# SentencePiece holds its training text in memory, several times over: a larger text is sampled
# evenly down to about this many characters (plenty for vocabularies of a few thousand).
SP_TRAIN_CHARS = 10_000_000


def _sp_sentences(text, first: list[str]):
    """Lines of ``text`` (a string or an iterable of strings), cut to SentencePiece's sentence
    limit; a line is never held longer than that, however long it is. The first piece is kept
    in ``first`` for a look at the alphabet."""
    carry = ""
    for chunk in _chunks(text):
        if not first:
            first.append(chunk)
        lines = (carry + chunk).split("\n")
        carry = lines.pop()
        for line in lines:
            yield from _sp_pieces(line)
        while len(carry) >= _SP_SENTENCE_CHARS:  # a long line: emit what cannot grow any more
            yield from _sp_pieces(carry[:_SP_SENTENCE_CHARS])
            carry = carry[_SP_SENTENCE_CHARS:]
    yield from _sp_pieces(carry)


def _even_sample(sentences, fraction: float):
    """About ``fraction`` of the characters, spread evenly over the whole text."""
    credit = 0.0
    for sentence in sentences:
        credit += len(sentence) * fraction
        if credit >= len(sentence):
            credit -= len(sentence)
            yield sentence


def _sp_pieces(line: str):
    for start in range(0, len(line), _SP_SENTENCE_CHARS):
        piece = line[start : start + _SP_SENTENCE_CHARS]
        if piece.strip():
            yield piece


class SentencePieceTokenizer:
    """BPE or unigram subwords from SentencePiece, with byte fallback so nothing is unknown.

    Text is kept exactly (identity normalisation, no dummy prefix, spaces kept), so decoding the
    ids gives back the text; the one exception is U+2581 "▁", SentencePiece's own marker for a
    space, which comes back as a space. Newlines are never inside a piece (they are byte pieces).
    """

    unk_id = None
    cuts_anywhere = False

    def __init__(self, model_proto: bytes, kind: str):
        import sentencepiece as spm

        self.kind = kind
        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab_size = self._sp.vocab_size()
        self._dtype = id_dtype(self.vocab_size)

    @classmethod
    def train(cls, text, kind: str, vocab_size: int, size_hint: int | None = None) -> SentencePieceTokenizer:
        """Train on ``text``: a string, or an iterable of strings read once. ``size_hint`` (about
        how many characters it holds) lets a large text be sampled evenly."""
        import sentencepiece as spm

        if kind not in ("bpe", "unigram"):
            raise ConfigError(f"--tokenizer {kind} is not a SentencePiece model type (bpe, unigram)")
        model = io.BytesIO()
        first: list[str] = []
        sentences = _sp_sentences(text, first)
        if size_hint and size_hint > SP_TRAIN_CHARS:
            sentences = _even_sample(sentences, SP_TRAIN_CHARS / size_hint)
        head = list(itertools.islice(sentences, 1000))  # enough to see the alphabet's size
        failed: list[Exception] = []

        def guarded(it):
            # An error while reading the text (bad bytes late in a file) must reach the user as
            # itself, not as whatever SentencePiece makes of an iterator that raised.
            try:
                yield from it
            except Exception as e:
                failed.append(e)

        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=guarded(itertools.chain(head, sentences)),
                model_writer=model,
                model_type=kind,
                vocab_size=vocab_size,
                byte_fallback=True,
                # Full coverage for alphabets; CJK-sized ones leave rare characters to byte pieces.
                character_coverage=1.0 if len(set(first[0] if first else "")) < 1000 else 0.9995,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                add_dummy_prefix=False,
                max_sentence_length=_SP_MAX_SENTENCE_BYTES,
                input_sentence_size=_SP_MAX_TRAIN_SENTENCES,
                shuffle_input_sentence=True,
                bos_id=-1,
                eos_id=-1,
                num_threads=2,
                minloglevel=2,
            )
        except RuntimeError as e:
            if failed:
                raise failed[0] from None
            raise _sentencepiece_error(str(e), vocab_size) from None
        if failed:
            raise failed[0]
        return cls(model.getvalue(), kind)

    def encode(self, text: str) -> np.ndarray:
        # Cut after newlines: no piece contains a newline, so encoding the parts gives the same
        # ids as encoding the whole, with bounded memory and SentencePiece's threads.
        parts = re.findall(r"[^\n]*\n|[^\n]+$", text) if text else []
        out: list[np.ndarray] = []
        batch: list[str] = []
        size = 0
        for part in parts:
            batch.append(part)
            size += len(part)
            if size >= _CHUNK_CHARS:
                out.extend(self._encode_batch(batch))
                batch, size = [], 0
        out.extend(self._encode_batch(batch))
        if not out:
            return np.zeros(0, dtype=self._dtype)
        return np.concatenate(out)

    def _encode_batch(self, batch: list[str]) -> list[np.ndarray]:
        if not batch:
            return []
        ids = self._sp.encode(["".join(batch)], num_threads=2)
        return [np.asarray(x, dtype=self._dtype) for x in ids]

    def decode(self, ids) -> str:
        return self._sp.decode(checked_ids(ids, self.vocab_size).tolist())

    def token_bytes(self) -> list[bytes]:
        table = []
        for i in range(self.vocab_size):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_byte(i):
                table.append(bytes([int(piece[1:-1], 16)]))  # "<0x0A>"
            elif self._sp.is_control(i) or self._sp.is_unknown(i):
                table.append(b"")
            else:
                table.append(piece.replace("\u2581", " ").encode("utf-8"))
        return table

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model_proto": self.model_proto}


def _sentencepiece_error(message: str, vocab_size: int) -> Exception:
    too_high = re.search(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)", message)
    if too_high:
        return DataError(
            f"--vocab-size {vocab_size} is too large for this text; the largest that works is "
            f"{too_high.group(2)}. Use --vocab-size {too_high.group(2)} or less, or a longer text."
        )
    too_low = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message)
    if too_low:
        return DataError(
            f"--vocab-size {vocab_size} is too small: this text needs at least {too_low.group(2)} "
            "(256 byte pieces plus its characters). Use a larger --vocab-size."
        )
    if "sentences_.empty()" in message:
        return DataError("the text has no lines SentencePiece can train on; use --tokenizer char or byte")
    return DataError(f"SentencePiece could not train on this text: {message.splitlines()[-1]}")


def train_tokenizer(kind: str, text, vocab_size: int = 512, size_hint: int | None = None) -> Tokenizer:
    """Build the tokenizer named by ``--tokenizer`` from the training text (a string, or an
    iterable of strings read once, so a file need not be in memory)."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "byte":
        for _ in [] if isinstance(text, str) else text:  # read it all: the same checks as the others
            pass
        return ByteTokenizer()
    return SentencePieceTokenizer.train(text, kind, vocab_size, size_hint)


def tokenizer_from_dict(record: dict) -> Tokenizer:
    """The tokenizer a checkpoint recorded (``Tokenizer.to_dict``). A record that is not one a
    tokenizer wrote (from a damaged or foreign checkpoint) raises ``ValueError`` saying what is
    wrong with it; SentencePiece is never handed anything but bytes."""
    if not isinstance(record, dict):
        raise ValueError(f"the tokenizer record is a {type(record).__name__}, not a dict")
    kind = record.get("kind")
    if kind == "char":
        chars = record.get("chars")
        if not isinstance(chars, str):
            raise ValueError(f"the char vocabulary is a {type(chars).__name__}, not a string")
        if len(set(chars)) != len(chars):
            raise ValueError("the char vocabulary repeats a character")
        return CharTokenizer(chars)
    if kind == "byte":
        return ByteTokenizer()
    if kind in ("bpe", "unigram"):
        proto = record.get("model_proto")
        if not isinstance(proto, (bytes, bytearray)):
            raise ValueError(f"the SentencePiece model is a {type(proto).__name__}, not bytes")
        try:
            tokenizer = SentencePieceTokenizer(bytes(proto), kind)
        except Exception as e:  # SentencePiece raises RuntimeError and others on a bad model
            raise ValueError(f"the SentencePiece model cannot be read ({str(e).strip()[:200]})") from None
        if tokenizer.vocab_size < 1:
            raise ValueError("the SentencePiece model has no pieces")
        return tokenizer
    raise ValueError(f"unknown tokenizer kind {kind!r}"[:200])


def default_start_id(tokenizer) -> int:
    """With no prime, generation starts as if after a newline (or the first known token)."""
    if tokenizer.kind == "char" and "\n" not in tokenizer.chars:
        return 0
    return int(tokenizer.encode("\n")[0])
