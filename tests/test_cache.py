import math

import numpy as np
import pytest
import torch

from charlstm.config import CacheConfig, ModelConfig
from charlstm.errors import ConfigError
from charlstm.evaluation.cache import NeuralCache, cached_stream_loss
from charlstm.evaluation.evaluate import stream_loss
from charlstm.model import LanguageModel


def small_model(vocab_size=12, seed=0):
    torch.manual_seed(seed)
    return LanguageModel(ModelConfig(vocab_size=vocab_size, embedding_dim=8, hidden_size=24, num_layers=2, dropout=0.0))


def filled_cache(config, seed=0, entries=30, vocab=7, hidden=5):
    g = torch.Generator().manual_seed(seed)
    cache = NeuralCache(config, "cpu")
    cache.score(torch.randn(entries, hidden, generator=g), torch.zeros(entries), torch.randint(0, vocab, (entries,), generator=g))
    return cache, g


def test_the_mixture_sums_to_one_and_is_the_models_when_lambda_is_0():
    queries_hidden = 5
    for lambda_ in (0.0, 0.3, 0.9):
        cache, g = filled_cache(CacheConfig(cache_size=20, cache_theta=0.7, cache_lambda=lambda_))
        log_probs = torch.log_softmax(torch.randn(4, 7, generator=g), dim=-1)  # (T, V)
        mixed = cache.distribution(torch.randn(4, queries_hidden, generator=g), log_probs)
        assert torch.allclose(mixed.exp().sum(-1), torch.ones(4), atol=1e-6)
        if lambda_ == 0.0:
            assert torch.allclose(mixed, log_probs, atol=1e-6)
        else:
            assert not torch.allclose(mixed, log_probs, atol=1e-3)


def test_scoring_a_segment_matches_the_full_distribution_of_each_row_in_turn():
    # score() reads a segment with one masked matmul; it must equal reading it token by token
    # with distribution() and remembering each token before the next.
    config = CacheConfig(cache_size=6, cache_theta=0.5, cache_lambda=0.25)
    g = torch.Generator().manual_seed(3)
    features = torch.randn(15, 4, generator=g)
    targets = torch.randint(0, 5, (15,), generator=g)
    log_probs = torch.log_softmax(torch.randn(15, 5, generator=g), dim=-1)
    together = NeuralCache(config, "cpu").score(features, log_probs.gather(1, targets[:, None])[:, 0], targets)
    one_by_one = NeuralCache(config, "cpu")
    expected = []
    for t in range(15):
        row = one_by_one.distribution(features[t : t + 1], log_probs[t : t + 1])[0]
        expected.append(-row[targets[t]])
        one_by_one.score(features[t : t + 1], log_probs[t, targets[t]][None], targets[t : t + 1])
    assert torch.allclose(together, torch.stack(expected), atol=1e-5)
    assert len(one_by_one.values) == 6  # the window keeps the last cache_size tokens


def test_a_text_that_repeats_itself_is_scored_far_better_with_the_cache():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=40, embedding_dim=8, hidden_size=24, num_layers=1, dropout=0.0))
    ids = np.tile(np.random.default_rng(0).integers(0, 40, size=50), 16)  # 800 tokens: 50 repeated
    static, count = stream_loss(model, ids, batch_size=1, bptt=32, device="cpu")
    # An untrained model's states are small (|h| ~ 0.1): a sharp theta tells them apart.
    config = CacheConfig(cache_size=100, cache_theta=30.0)
    cached, cached_count, cache = cached_stream_loss(model, ids, config, bptt=32, device="cpu")
    assert cached_count == count == 799
    assert cached / count < 0.7 * static / count  # 0.65 measured
    assert cache.lambda_ == 0.95  # the grid learnt to trust the copy (its largest share)


def test_lambda_0_scores_as_the_model_alone_and_a_window_of_0_is_no_cache():
    model = small_model()
    ids = np.random.default_rng(1).integers(0, 12, size=200)
    static, _ = stream_loss(model, ids, batch_size=1, bptt=32, device="cpu")
    for config in (CacheConfig(cache_size=50, cache_theta=1.0, cache_lambda=0.0), CacheConfig(cache_size=0)):
        cached, _, _ = cached_stream_loss(model, ids, config, bptt=32, device="cpu")
        assert math.isclose(cached, static, rel_tol=1e-5)


def test_the_first_token_of_a_segment_sees_only_earlier_ones():
    # Changing a later token cannot change the score of an earlier one.
    model = small_model()
    ids = np.random.default_rng(2).integers(0, 12, size=100)
    config = CacheConfig(cache_size=30, cache_theta=1.0, cache_lambda=0.3)
    first, _, _ = cached_stream_loss(model, ids[:60], config, bptt=64, device="cpu")
    changed = ids.copy()
    changed[60:] = (changed[60:] + 1) % 12
    both, _, _ = cached_stream_loss(model, changed, config, bptt=64, device="cpu")
    prefix, _, _ = cached_stream_loss(model, changed[:60], config, bptt=64, device="cpu")
    assert math.isclose(first, prefix, rel_tol=1e-6) and both > prefix


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cache_size": -1}, "--cache-size must be 0 or more (got -1)"),
        ({"cache_theta": 0.0}, "--cache-theta must be a positive number (got 0.0)"),
        ({"cache_lambda": 1.0}, "--cache-lambda must be in [0, 1) (got 1.0)"),
    ],
)
def test_bad_cache_settings_are_one_line_naming_the_flag(changes, message):
    with pytest.raises(ConfigError) as error:
        CacheConfig(**changes)
    assert str(error.value) == message


# ------------------------------------------------------------------------- a context (eval --context)


def test_a_context_is_read_but_never_scored_by_each_pass():
    """With ``skip`` context tokens, each pass scores exactly the text's tokens, as the one-stream
    pass over context + text scores them: the context starts the state, fills the cache and
    (adapting) moves the weights, but none of its tokens counts."""
    from charlstm.config import AdaptConfig
    from charlstm.evaluation.adaptation import adapt

    model = small_model()
    ids = np.random.default_rng(4).integers(0, 12, size=300)
    skip = 128  # two adapting segments of 64: the windows of the context alone are the same
    whole, whole_count = stream_loss(model, ids, batch_size=1, bptt=32, device="cpu")
    head, head_count = stream_loss(model, ids[:skip], batch_size=1, bptt=32, device="cpu")
    for batch_size in (1, 4):
        text, count = stream_loss(model, ids, batch_size=batch_size, bptt=32, device="cpu", skip=skip, min_part=2)
        assert count == len(ids) - skip == whole_count - head_count  # the text's first token too
        assert math.isclose(text, whole - head, rel_tol=1e-5)
    config = CacheConfig(cache_size=50, cache_theta=1.0)  # given: a context settles the grid's theta
    whole_c, _, _ = cached_stream_loss(model, ids, config, bptt=32, device="cpu")
    head_c, _, _ = cached_stream_loss(model, ids[:skip], config, bptt=32, device="cpu")
    text_c, count_c, _ = cached_stream_loss(model, ids, config, bptt=32, device="cpu", skip=skip)
    assert count_c == len(ids) - skip and math.isclose(text_c, whole_c - head_c, rel_tol=1e-5)

    def adapted(ids, **kw):
        m = small_model()  # adapting changes the weights: a fresh copy each time
        return adapt(m, ids, AdaptConfig(adapt_bptt=64), "cpu", **kw)[:2]

    whole_a, head_a, (text_a, count_a) = adapted(ids)[0], adapted(ids[:skip])[0], adapted(ids, skip=skip)
    assert count_a == len(ids) - skip and math.isclose(text_a, whole_a - head_a, rel_tol=1e-5)
    # learn=0: the context is only read, so the text is scored from the trained weights first
    not_learnt, _ = adapted(ids, skip=skip, learn=0)
    assert not math.isclose(not_learnt, text_a, rel_tol=1e-4)


def test_adapting_with_a_cache_scores_only_the_context_tail_that_tunes_it(monkeypatch):
    """The context the weights learn from is only remembered by the cache, but for its last
    ``CONTEXT_TUNE_TOKENS`` (which choose theta and lambda), as in the cached pass and a
    compressor's ``read_context``: scoring all of it with every theta cost about 155 more
    products against the whole cache."""
    import charlstm.evaluation.cache as cache_module
    from charlstm.config import AdaptConfig
    from charlstm.evaluation.adaptation import adapt

    monkeypatch.setattr(cache_module, "CONTEXT_TUNE_TOKENS", 128)
    scored = []
    score = NeuralCache.score
    monkeypatch.setattr(NeuralCache, "score", lambda self, f, lp, t: scored.append(len(t)) or score(self, f, lp, t))
    ids = np.random.default_rng(5).integers(0, 12, size=600)
    cache = NeuralCache(CacheConfig(cache_size=1000), "cpu", vocab_size=12)
    adapt(small_model(), ids, AdaptConfig(adapt_bptt=64), "cpu", cache=cache, skip=384, learn=384)
    assert sum(scored) == 599 - 192  # the windows from the one ending at 384 - 128 on
    assert cache.count == 599 and len(cache.thetas) == 1  # every state remembered; theta settled


def test_a_context_makes_a_text_that_repeats_it_cheap():
    """The cache copies from the context: a text that is its context again scores far better
    with the context given than alone, and only the text's tokens count."""
    import random

    from charlstm.data.text import TextSource
    from charlstm.data.tokenizers import CharTokenizer
    from charlstm.evaluation.evaluate import evaluate_source

    random.seed(0)
    piece = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(50))
    text, context = piece * 2, piece * 8  # the text's second half repeats its first, the context all of it
    tok = CharTokenizer.train(text)
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, embedding_dim=8, hidden_size=24, num_layers=1))
    config = CacheConfig(cache_size=4000, cache_theta=30.0)  # an untrained model's states are small: sharp

    def scored(context):
        return evaluate_source(
            model, tok, TextSource.from_text(text), batch_size=1, bptt=32, device="cpu", cache_config=config,
            context=None if context is None else TextSource.from_text(context),
        )

    alone, given = scored(None), scored(context)
    assert given.context_tokens == 400 and alone.context_tokens == 0 and given.tokens == 100
    assert given.cached.loss < 0.75 * alone.cached.loss  # 2.21 against 3.29 nats
    assert abs(given.loss - alone.loss) < 0.05  # the static model learns nothing from it


def test_eval_context_through_the_cli(tiny_run, tmp_path, small_text):
    from tests.conftest import run_cli
    import json

    part = tmp_path / "part.txt"
    part.write_text(small_text[:2000], encoding="utf-8")
    base = ["eval", tiny_run, part, "--cache-size", "3000", "--json"]
    alone, given = run_cli(*base), run_cli(*base, "--context", part)
    assert alone.returncode == given.returncode == 0, given.stderr
    alone, given = json.loads(alone.stdout), json.loads(given.stdout)
    assert given["context_tokens"] == 2000 and alone["context_tokens"] == 0
    assert given["cached"]["bits_per_char"] < alone["cached"]["bits_per_char"]
    table = run_cli("eval", tiny_run, part, "--context", part)
    assert "context read first (not scored)" in table.stdout and "2,000 tokens" in table.stdout
    missing = run_cli("eval", tiny_run, part, "--context", tmp_path / "nope.txt")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nope.txt" in missing.stderr


def _stream_of_states(seed, n, hidden=64, vocab=20):
    """States spread like a trained model's (each a noisy copy of one of a few hundred
    prototypes, tanh-squashed) and the token after each."""
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(300, hidden, generator=g) * 2
    which = torch.randint(0, 300, (n,), generator=g)
    states = (prototypes[which] + 0.3 * torch.randn(n, hidden, generator=g)).tanh()
    return states, (which % vocab), torch.log_softmax(torch.randn(n, vocab, generator=g), -1)


@pytest.mark.parametrize("theta, vocab, kind", [
    (0.3, 20, "int8"), (1.0, 20, "int8"), (3.0, 20, "int8"), (1.0, 300, "int8"), (1.0, 20, "bf16"), (3.0, 20, "fp32"),
])
def test_the_fast_product_scores_within_tolerance_of_the_exact_product(monkeypatch, theta, vocab, kind):
    """A large cache with one theta is scored by the fast product (the ring held as ``kind``, shifted near each
    row's best, exp2, the mass on every token from the ring's one-hot tokens, or added to each token's row for a
    vocabulary over ONE_HOT_MAX_VOCAB): per token within 0.05 nats of the exact product (0.014-0.037 seen), the
    mean within 1e-4 nats (1e-5 seen), and it is taken (not the exact fallback)."""
    import charlstm.evaluation.cache as cache_module

    monkeypatch.setattr(cache_module, "FAST_MIN_STATES", 512)
    monkeypatch.setattr(cache_module, "fast_kind", lambda device: kind)
    states, values, log_probs = _stream_of_states(1, 6000, vocab=vocab)
    results = {}
    for exact in (True, False):
        config = CacheConfig(cache_size=4000, cache_theta=theta, cache_lambda=0.3)
        cache = NeuralCache(config, "cpu", vocab_size=vocab, exact=exact)
        nll = []
        for start in range(0, len(values), 256):
            rows = slice(start, start + 256)
            lp = log_probs[rows].gather(1, values[rows, None])[:, 0]
            nll.append(cache.score(states[rows], lp, values[rows]))
        results[exact] = torch.cat(nll)
        assert cache.fast_segments == (0 if exact else 22)  # every segment once 512 states are held
        assert exact or (cache.ring_tokens is None) == (vocab > cache_module.ONE_HOT_MAX_VOCAB)
        assert exact or cache.low.kind == kind
    assert (results[True] - results[False]).abs().max() < 0.05
    assert abs(results[True].mean() - results[False].mean()) < 1e-4  # nats per token; the figure's tolerance is 2e-3


def test_a_small_cache_or_no_vocabulary_uses_the_exact_product():
    states, values, _ = _stream_of_states(2, 200)
    small = NeuralCache(CacheConfig(cache_size=100, cache_theta=1.0), "cpu", vocab_size=20)
    assert not small.fast  # under FAST_MIN_STATES: no low-precision copy of the ring
    grid = NeuralCache(CacheConfig(cache_size=10_000), "cpu", vocab_size=20)
    unknown = NeuralCache(CacheConfig(cache_size=10_000, cache_theta=1.0), "cpu")
    assert grid.fast and not unknown.fast
    for cache in (small, grid, unknown):
        for start in (0, 64):
            cache.score(states[start : start + 64], torch.zeros(64), values[start : start + 64])
        assert cache.fast_segments == 0  # under FAST_MIN_STATES held: the exact product


@pytest.mark.parametrize("vocab, kind", [(20, "int8"), (300, "int8"), (20, "fp32")])
def test_a_few_rows_read_the_whole_ring_at_once_within_tolerance_of_the_exact_distribution(monkeypatch, vocab, kind):
    """``copy_distribution`` for a compressor's few streams (``_whole_mass``: one product against
    every state, each weight added to its token's row) against the exact softmax over the ring."""
    import charlstm.evaluation.cache as cache_module

    monkeypatch.setattr(cache_module, "FAST_MIN_STATES", 512)
    monkeypatch.setattr(cache_module, "fast_kind", lambda device: kind)
    states, values, _ = _stream_of_states(3, 3000, vocab=vocab)
    fast = NeuralCache(CacheConfig(cache_size=2000, cache_theta=1.0, cache_lambda=0.3), "cpu", vocab_size=vocab)
    exact = NeuralCache(CacheConfig(cache_size=2000, cache_theta=1.0, cache_lambda=0.3), "cpu", vocab_size=vocab, exact=True)
    for cache in (fast, exact):
        cache.remember(states[:2992], values[:2992])
    rows = states[2992:]  # 8 streams' rows
    got, expected = fast.copy_distribution(rows, vocab), exact.copy_distribution(rows, vocab)
    assert fast.fast_segments == 1 and exact.fast_segments == 0
    torch.testing.assert_close(got.sum(dim=-1), torch.ones(8))
    assert (got - expected).abs().max() < 0.02  # probabilities, from a low-precision product
