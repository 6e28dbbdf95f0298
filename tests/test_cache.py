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
    assert cache.lambda_ == 0.7  # the grid learnt to trust the copy


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
