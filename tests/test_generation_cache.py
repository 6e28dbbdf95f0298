import math

import pytest
import torch

from charlstm.config import CacheConfig, ModelConfig, SampleConfig
from charlstm.errors import ConfigError
from charlstm.generation.cache import GenerationCache
from charlstm.model import LanguageModel
from tests.conftest import run_cli


def test_the_mixture_sums_to_one_and_is_the_models_when_lambda_is_0():
    g = torch.Generator().manual_seed(0)
    for lambda_ in (0.0, 0.4):
        cache = GenerationCache(CacheConfig(cache_size=8, cache_theta=1.0, cache_lambda=lambda_), 3, 5, "cpu")
        for _ in range(11):  # more than the ring holds
            cache.remember(torch.randn(3, 5, generator=g), torch.randint(0, 7, (3,), generator=g))
        assert cache.filled == 8
        logits = torch.randn(3, 7, generator=g)
        model = logits.log_softmax(-1)
        mixed = cache.mix_(logits.clone(), torch.randn(3, 5, generator=g))
        assert torch.allclose(mixed.exp().sum(-1), torch.ones(3), atol=1e-6)
        assert torch.allclose(mixed, model, atol=1e-6) == (lambda_ == 0.0)


def test_each_draw_uses_the_distribution_eval_scores_with():
    """The log-probability a sample records for each token it drew is the one the evaluation
    cache gives that token at that place, prime included in the cache: the same mixture."""
    import charlstm.generation.sampling as sampling
    from charlstm.data.tokenizers import CharTokenizer
    from charlstm.evaluation.cache import NeuralCache, token_nll

    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz\n ")
    torch.manual_seed(2)
    model = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, embedding_dim=8, hidden_size=24, num_layers=2))
    model.eval()
    prime = "qzxwvkj" * 6
    cache = dict(cache_size=30, cache_theta=20.0, cache_lambda=0.6)
    for temperature in (0.0, 1.0):
        config = SampleConfig(prime=prime, length=40, temperature=temperature, seed=5, **cache)
        generation = sampling.generate(model, tok, config, "cpu")
        text = "".join(p[0] for p in generation)
        ids = torch.tensor(tok.encode(prime + text)).long()
        with torch.no_grad():
            logits, features, _ = model.forward_features(ids[:-1, None])
        scorer = NeuralCache(CacheConfig(**cache), "cpu")
        nll = scorer.score(features[:, 0], -token_nll(logits, ids[1:, None])[:, 0], ids[1:])
        drawn = nll[len(prime) - 1 :]  # the positions that predict the 40 drawn tokens
        assert len(drawn) == 40
        assert math.isclose(generation.logprob[0], -float(drawn.sum()), rel_tol=1e-4)


def test_greedy_text_copies_from_the_prime_with_the_cache():
    """An untrained model has learnt nothing of a prime that repeats a random string; with the
    cache's share at 0.9 every token it writes is one the prime has (the cache can only copy)."""
    import charlstm.generation.sampling as sampling
    from charlstm.data.tokenizers import CharTokenizer

    pattern = "qzxwvkj"
    tok = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz\n ")
    for seed in range(3):
        torch.manual_seed(seed)
        model = LanguageModel(ModelConfig(vocab_size=tok.vocab_size, embedding_dim=8, hidden_size=24, num_layers=1))

        def greedy(**cache):
            config = SampleConfig(prime=pattern * 6, length=40, temperature=0, seed=0, **cache)
            return "".join(p[0] for p in sampling.generate(model, tok, config, "cpu"))

        alone, copied = greedy(), greedy(cache_size=100, cache_theta=300.0, cache_lambda=0.9)
        assert set(copied) <= set(pattern) and not set(alone) <= set(pattern)


def test_a_chat_session_keeps_its_cache_across_turns(tiny_run):
    import charlstm

    lm = charlstm.load(tiny_run, device="cpu")
    session = lm.session(length=20, seed=1, cache_size=1000)
    session.reply("the cat sat")
    cache = session._chat.cache
    assert cache.filled == len("the cat sat") - 1 + 20  # the prime's positions, then one per drawn token
    session.reply("on the mat")
    assert session._chat.cache is cache and cache.filled == 31 + len("on the mat") - 1 + 20
    session.reset()
    assert session._chat.cache is None


def test_sample_with_a_cache_through_the_cli(tiny_run):
    args = ["sample", tiny_run, "--prime", "the cat", "--length", "80", "--seed", "3"]
    plain, cached = run_cli(*args), run_cli(*args, "--cache-size", "500")
    again = run_cli(*args, "--cache-size", "500")
    assert plain.returncode == cached.returncode == 0, cached.stderr
    assert cached.stdout == again.stdout and cached.stdout != plain.stdout
    assert len(cached.stdout) == len("the cat") + 80 + 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cache-size", "5", "--beam-width", "2"], "--cache-size does not combine with --beam-width"),
        (["--cache-lambda", "0.2"], "--cache-theta and --cache-lambda need --cache-size (above 0)"),
        (["--cache-size", "-1"], "--cache-size must be 0 or more (got -1)"),
        (["--cache-size", "5", "--cache-lambda", "1"], "--cache-lambda must be in [0, 1) (got 1.0)"),
    ],
)
def test_bad_cache_settings_for_sample_and_chat_are_one_line(tiny_run, extra, message):
    for command in (["sample", tiny_run], ["chat", tiny_run]):
        if command[0] == "chat" and "--beam-width" in extra:
            continue
        result = run_cli(*command, *extra, input="hello\n")
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.strip().endswith(message) and result.stderr.count("\n") == 1
    with pytest.raises(ConfigError):
        SampleConfig(cache_size=-1)
    assert math.isfinite(1.0)
