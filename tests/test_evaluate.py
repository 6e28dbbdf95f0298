import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlstm.config import ModelConfig
from charlstm.errors import DataError
from charlstm.evaluation.evaluate import evaluate_text, stream_loss
from charlstm.model import LanguageModel
from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer


def uniform_model(vocab_size: int) -> LanguageModel:
    model = LanguageModel(
        ModelConfig(vocab_size=vocab_size, embedding_dim=4, hidden_size=4, num_layers=1)
    )
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
    return model


def test_uniform_model_scores_log_vocab_for_every_scored_token():
    model = uniform_model(7)
    ids = np.random.default_rng(0).integers(0, 7, size=1001)
    total, count = stream_loss(model, ids, batch_size=8, bptt=13, device="cpu")
    assert count == 1001 - 1  # only the text's first token has no context
    assert math.isclose(total / count, math.log(7), rel_tol=1e-6)


def test_stream_loss_is_independent_of_windowing():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=9, embedding_dim=4, hidden_size=6, num_layers=2))
    ids = np.random.default_rng(1).integers(0, 9, size=500)
    a = stream_loss(model, ids, batch_size=3, bptt=500, device="cpu")
    b = stream_loss(model, ids, batch_size=3, bptt=7, device="cpu")
    assert a[1] == b[1]
    assert math.isclose(a[0], b[0], rel_tol=1e-5)


def test_warm_streams_score_as_one_long_stream():
    """With a warm-up reaching back to the start, every part starts in the state one stream would
    have there: the same loss as a single stream, whatever the number of parts."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=9, embedding_dim=4, hidden_size=6, num_layers=2))
    ids = np.random.default_rng(1).integers(0, 9, size=503)
    one = stream_loss(model, ids, batch_size=1, bptt=50, device="cpu")
    for batch_size in (2, 5, 7):
        many = stream_loss(model, ids, batch_size=batch_size, bptt=50, device="cpu", warmup=503, min_part=2)
        assert many[1] == one[1] == 502
        assert math.isclose(many[0], one[0], rel_tol=1e-5)
    cold = stream_loss(model, ids, batch_size=5, bptt=50, device="cpu", warmup=0, min_part=2)
    assert cold[1] == 503 - 5  # without a warm-up each part's first token has no context


def test_report_bits_per_char_and_byte():
    text = "abcé" * 50
    tok = CharTokenizer.train(text)
    report = evaluate_text(
        uniform_model(tok.vocab_size), tok, text + "z", batch_size=4, bptt=16, device="cpu"
    )
    assert report.chars == 201 and report.bytes == 251 and report.tokens == 201
    assert report.unknown == 1
    assert math.isclose(report.loss, math.log(tok.vocab_size), rel_tol=1e-6)
    assert math.isclose(report.bits_per_char, math.log2(tok.vocab_size), rel_tol=1e-6)
    assert math.isclose(report.bits_per_byte, report.bits_per_char * 201 / 251, rel_tol=1e-9)
    assert math.isclose(report.perplexity, tok.vocab_size, rel_tol=1e-6)


def test_byte_model_bits_per_byte_equal_loss_in_bits():
    text = "héllo wörld " * 20
    tok = ByteTokenizer()
    report = evaluate_text(uniform_model(256), tok, text, batch_size=2, bptt=32, device="cpu")
    assert report.tokens == report.bytes
    assert math.isclose(report.bits_per_byte, 8.0, rel_tol=1e-6)


_CHAR_MODEL = None


@settings(max_examples=150, deadline=None)
@given(st.text(), st.integers(1, 9), st.integers(1, 20))
def test_eval_on_arbitrary_text_never_crashes(text, batch_size, bptt):
    """Any Unicode text either gets a finite report or one clear DataError (too short/empty)."""
    global _CHAR_MODEL
    if _CHAR_MODEL is None:
        tok = CharTokenizer.train("abc \n")
        _CHAR_MODEL = (tok, LanguageModel(ModelConfig(vocab_size=tok.vocab_size, embedding_dim=4, hidden_size=8, num_layers=1)))
    tok, model = _CHAR_MODEL
    try:
        report = evaluate_text(model, tok, text, batch_size=batch_size, bptt=bptt, device="cpu")
    except DataError as e:
        assert len(text) < 2 or not text.strip(), e
        return
    assert report.tokens == report.chars == len(text) and math.isfinite(report.loss)
    assert report.unknown == sum(c not in "abc \n" for c in text)


def test_stream_loss_reads_a_memory_mapped_file(tmp_path):
    """Evaluation gathers windows straight from a token file: the same figures as from memory."""
    model = uniform_model(7)
    torch.manual_seed(0)
    model.head.weight.data.normal_()
    ids = np.random.default_rng(2).integers(0, 7, size=999).astype(np.uint8)
    ids.tofile(tmp_path / "ids")
    mapped = np.memmap(tmp_path / "ids", dtype=np.uint8, mode="r")
    assert stream_loss(model, mapped, batch_size=5, bptt=11, device="cpu") == stream_loss(
        model, ids, batch_size=5, bptt=11, device="cpu"
    )


def test_a_short_text_is_one_stream():
    """Parts are at least MIN_PART_TOKENS long: below two of them, batch_size does not matter
    at all (a cold start in the wrong place can cost a real model dearly)."""
    from charlstm.evaluation.evaluate import MIN_PART_TOKENS

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=9, embedding_dim=4, hidden_size=6, num_layers=1))
    ids = np.random.default_rng(3).integers(0, 9, size=2 * MIN_PART_TOKENS - 1)
    one = stream_loss(model, ids, batch_size=1, bptt=256, device="cpu", warmup=0)
    many = stream_loss(model, ids, batch_size=64, bptt=256, device="cpu", warmup=0)
    assert many == one  # bit for bit: the same single stream
    two = stream_loss(model, np.concatenate([ids, ids[:1]]), batch_size=64, bptt=256, device="cpu", warmup=0)
    assert two[1] == 2 * MIN_PART_TOKENS - 2  # two cold parts: each part's first token unscored
