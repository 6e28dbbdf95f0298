import math
import random

import torch

from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import ModelConfig
from charlstm.model import LanguageModel
from charlstm.evaluation.score import LineScore, score_lines
from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer
from tests.test_evaluate import uniform_model
from tests.test_sampling import continuation_logprob


def test_uniform_model_scores_log_vocab_per_token():
    tok = CharTokenizer("abc \n")
    vocab = tok.vocab_size  # 6, with the unknown symbol
    scores = score_lines(uniform_model(vocab), tok, ["abc", "a", "c ba bc", "xyz"], "cpu")
    assert [(s.text, s.tokens, s.chars) for s in scores] == [
        ("abc", 3, 3),
        ("a", 1, 1),
        ("c ba bc", 7, 7),
        ("xyz", 3, 3),  # unknown characters are scored as the unknown symbol
    ]
    for s in scores:
        assert math.isclose(s.logprob, -s.tokens * math.log(vocab), rel_tol=1e-6)
        assert math.isclose(s.bits_per_char, math.log2(vocab), rel_tol=1e-6)


def test_bits_per_char_counts_characters_not_tokens():
    (s,) = score_lines(uniform_model(256), ByteTokenizer(), ["é日a"], "cpu")
    assert (s.tokens, s.chars) == (6, 3)  # 2 + 3 + 1 UTF-8 bytes
    assert math.isclose(s.logprob, -6 * math.log(256), rel_tol=1e-6)
    assert math.isclose(s.bits_per_char, 16.0, rel_tol=1e-6)


def test_empty_lines_have_no_tokens_and_no_bits_per_char():
    tok = CharTokenizer("ab")
    scores = score_lines(uniform_model(tok.vocab_size), tok, ["", "ab", ""], "cpu")
    assert scores[0] == scores[2]
    assert (scores[0].text, scores[0].tokens, scores[0].chars, scores[0].logprob) == ("", 0, 0, 0.0)
    assert math.isnan(scores[0].bits_per_char)
    assert scores[1].tokens == 2
    assert score_lines(uniform_model(tok.vocab_size), tok, [], "cpu") == []


def test_every_token_is_scored_after_a_newline(tiny_run):
    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    newline = tok.encode("\n").tolist()
    lines = ["The cat sat.", "a", "It was the best of times"]
    for s in score_lines(model, tok, lines, "cpu"):
        expected = continuation_logprob(model, newline, tok.encode(s.text).tolist())
        assert math.isclose(s.logprob, expected, rel_tol=1e-5)
        assert math.isclose(s.bits_per_char, -expected / math.log(2) / len(s.text), rel_tol=1e-5)


def test_batched_scores_equal_one_line_at_a_time():
    torch.manual_seed(0)
    tok = CharTokenizer("abcdefgh \n")
    model = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, embedding_dim=8, hidden_size=16, num_layers=2))
    rng = random.Random(1)
    lines = ["".join(rng.choices("abcdefgh ", k=rng.randrange(40))) for _ in range(50)]  # some empty
    batched = score_lines(model, tok, lines, "cpu", batch_size=8, bptt=7)
    alone = [score_lines(model, tok, [line], "cpu", batch_size=1, bptt=1000)[0] for line in lines]
    assert [s.text for s in batched] == lines  # the order of the input
    for b, a in zip(batched, alone):
        assert (b.text, b.tokens, b.chars) == (a.text, a.tokens, a.chars)
        assert math.isclose(b.logprob, a.logprob, rel_tol=1e-5)


def test_a_thousand_lines_take_one_model_call_per_batch():
    tok = CharTokenizer("abc")
    model = uniform_model(tok.vocab_size)
    calls = []
    original = model.forward

    def spy(ids, hidden=None):
        calls.append(tuple(ids.shape))
        return original(ids, hidden)

    model.forward = spy
    lines = ["abc"[: 1 + i % 3] for i in range(1000)]
    scores = score_lines(model, tok, lines, "cpu", batch_size=64)
    assert len(calls) == 16  # ceil(1000 / 64)
    # Sorted by length, each batch pads to nearly its own length: 334 lines of 1, 333 of 2 and 3.
    assert calls[:5] == [(1, 64)] * 5 and calls[5] == (2, 64) and calls[-1] == (3, 40)
    assert [s.text for s in scores] == lines  # back in the order of the input
    assert [s.tokens for s in scores[:3]] == [1, 2, 3]
    (one,) = score_lines(uniform_model(tok.vocab_size), tok, ["ab"], "cpu")
    assert scores[1] == LineScore("ab", 2, 2, one.logprob, one.bits_per_char)
