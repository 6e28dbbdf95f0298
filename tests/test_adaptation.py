import math

import numpy as np
import pytest
import torch

from charlstm.evaluation.adaptation import adapt, adapt_to_source, weight_step
from charlstm.config import AdaptConfig, ModelConfig
from charlstm.errors import ConfigError, DataError
from charlstm.evaluation.evaluate import stream_loss
from charlstm.model import LanguageModel
from charlstm.data.text import TextSource
from charlstm.data.tokenizers import CharTokenizer


def small_model(vocab_size=12, seed=0):
    torch.manual_seed(seed)
    return LanguageModel(ModelConfig(vocab_size=vocab_size, embedding_dim=8, hidden_size=24, num_layers=2, dropout=0.3))


def test_the_first_segment_is_scored_before_any_step():
    model = small_model()
    ids = np.random.default_rng(0).integers(0, 12, size=400)
    static = stream_loss(model, ids[:33], batch_size=1, bptt=64, device="cpu")
    adapted = adapt(model, ids[:33], AdaptConfig(adapt_lr=1.0, adapt_bptt=32), "cpu")
    assert adapted[1] == static[1] == 32
    assert math.isclose(adapted[0], static[0], rel_tol=1e-5)


def test_a_full_pull_back_undoes_every_step_so_scores_are_static():
    model = small_model()
    ids = np.random.default_rng(1).integers(0, 12, size=300)
    static = stream_loss(model, ids, batch_size=1, bptt=50, device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapt(model, ids, AdaptConfig(adapt_method="sgd", adapt_lr=0.5, adapt_decay=1.0, adapt_bptt=16), "cpu")
    assert adapted[1] == static[1] == 299
    assert math.isclose(adapted[0], static[0], rel_tol=1e-5)
    assert all(torch.allclose(before[k], v) for k, v in model.state_dict().items())
    assert model.training  # its mode is put back (and dropout was off while adapting: scores matched)


def test_adapting_learns_a_text_that_repeats_and_changes_the_weights():
    model = small_model()
    ids = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]), 100)
    static, count = stream_loss(model, ids, batch_size=1, bptt=64, device="cpu")
    before = model.head.weight.detach().clone()
    adapted, adapted_count = adapt(model, ids, AdaptConfig(adapt_method="sgd", adapt_lr=3.0, adapt_bptt=10), "cpu")
    assert adapted_count == count == 999
    assert adapted / count < 0.5 * static / count  # later repeats are predicted from earlier ones
    assert not torch.equal(before, model.head.weight)


@pytest.mark.parametrize("method", ["rms", "sgd"])
def test_tuning_tracks_how_the_weights_move_with_log_lr_and_log_decay(method):
    """What ``--adapt-tune`` takes for d(weights)/d(log lr), weights - trained, and for
    d(weights)/d(log decay), ``pulled``, for given gradients: central differences of runs with lr
    and decay fixed agree."""
    torch.manual_seed(0)
    shapes = [(5, 3), (4,)]
    grads = [[torch.randn(shape, dtype=torch.float64) for shape in shapes] for _ in range(6)]
    start = [torch.randn(shape, dtype=torch.float64) for shape in shapes]

    def run(lr, decay, tune):
        params = [p.clone() for p in start]
        step = weight_step(params, AdaptConfig(adapt_method=method, adapt_lr=lr, adapt_decay=decay, adapt_tune=tune))
        for g in grads:
            step(g)
        return params, step.tuning

    lr, decay, d = 0.3, 0.05, 1e-4
    params, tracked = run(lr, decay, 1e-12)  # its buffers kept, lr and decay all but fixed
    assert tracked.lr == pytest.approx(lr) and tracked.decay == pytest.approx(decay)
    moved = [p - s for p, s in zip(params, start)]
    by_lr, by_decay = (lambda e: run(lr * e, decay, 0.0)[0]), (lambda e: run(lr, decay * e, 0.0)[0])
    for taken, runs in ((moved, by_lr), (tracked.pulled, by_decay)):
        up, down = runs(math.exp(d)), runs(math.exp(-d))
        for u, v, derivative in zip(up, down, taken):
            assert derivative.abs().max() > 1e-3  # moved by it
            torch.testing.assert_close((u - v) / (2 * d), derivative, rtol=1e-5, atol=1e-8)


def test_tuning_raises_lr_on_a_text_that_repeats_and_zero_keeps_lr_and_decay():
    ids = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]), 60)
    results = {}
    for tune in (0.3, 0.0):
        model = small_model()
        config = AdaptConfig(adapt_bptt=10, adapt_tune=tune)
        step = weight_step([p for p in model.parameters() if p.requires_grad], config)
        total, count = adapt(model, ids, config, "cpu", step=step)
        results[tune] = (total / count, step.tuning.lr, step.tuning.decay)
    assert results[0.0][1:] == (0.002, 0.01)
    assert results[0.3][1] > 2 * 0.002  # each step helped the next: a larger one would have helped more
    assert results[0.3][0] < results[0.0][0]


def test_adapt_to_source_reads_a_text_and_refuses_one_too_short():
    text = "abcabcabd" * 40
    tok = CharTokenizer.train(text)
    model = small_model(tok.vocab_size)
    loss, tokens, (lr, decay) = adapt_to_source(model, tok, TextSource.from_text(text), AdaptConfig(adapt_lr=0.1), "cpu")
    assert tokens == 360 and 0 < loss < math.log(tok.vocab_size) + 1
    assert lr != 0.1 and decay != 0.01  # where --adapt-tune took them
    with pytest.raises(DataError, match="too short to adapt to: it needs at least 2 tokens"):
        adapt_to_source(model, tok, TextSource.from_text("a", "one.txt"), AdaptConfig(), "cpu")


def test_adapt_config_names_each_bad_value():
    with pytest.raises(ConfigError) as e:
        AdaptConfig(adapt_lr=0, adapt_decay=1.5, adapt_bptt=0)
    assert str(e.value) == (
        "--adapt-lr must be a positive number (got 0); --adapt-decay must be in [0, 1] (got 1.5); "
        "--adapt-bptt must be at least 1 (got 0)"
    )


@pytest.mark.parametrize("n, at", [(300, 128), (300, 100), (300, 0), (50, 70)])
def test_text_windows_cut_at_the_text_and_cover_every_row_once(n, at):
    from charlstm.evaluation.adaptation import text_windows

    cut = list(text_windows(n, 64, at))
    starts = [w.start for w in cut]
    assert starts[0] == 0 and sum(w.length for w in cut) == n - 1  # rows 0 .. n-2, each once
    assert all(a.start + a.length == b.start for a, b in zip(cut, cut[1:]))
    assert all(0 < w.length <= 64 for w in cut)
    if at < n - 1:
        assert at in starts  # the text starts a window, whatever came before it
        assert all((s - at) % 64 == 0 for s in starts if s >= at)


def test_a_model_trained_with_weight_drop_adapts_without_dropping_weights():
    """Dropout is off while adapting, weight drop included: the same text adapted twice from the
    same weights gives the same figure (a dropped recurrent matrix would differ each time, and the
    two sides of ``compress --adapt`` would not agree)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=12, embedding_dim=8, hidden_size=24, num_layers=1, dropout=0.3, weight_drop=0.5)
    ids = np.random.default_rng(4).integers(0, 12, size=200)
    model = LanguageModel(config)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    first = adapt(model, ids, AdaptConfig(adapt_bptt=16), "cpu")
    model.load_state_dict(start)
    again = adapt(model, ids, AdaptConfig(adapt_bptt=16), "cpu")
    assert first == again


def test_the_prior_adds_the_trainings_mean_squares_scaled_to_the_texts():
    """--adapt-prior K: the rms step's mean squares are K segments of the training's (the
    checkpoint's AdamW second moments), scaled so that their total is the text's mean segment's so
    far, and the text's own; with K = 0, or no moments, the step is what it was, to the bit."""
    from charlstm.evaluation.adaptation import model_step

    torch.manual_seed(1)
    grads = [[torch.randn_like(p) for p in small_model().parameters()] for _ in range(3)]
    runs = {}
    for prior, moments in ((300, True), (0, True), (300, False), (None, False)):
        model = small_model()
        torch.manual_seed(2)
        model.second_moments = {n: torch.rand_like(p) for n, p in model.named_parameters()} if moments else None
        config = AdaptConfig(adapt_prior=prior, adapt_tune=0.0, adapt_decay=0.0)
        step = model_step(model, config)
        rest = grads
        if prior == 300 and moments:
            v = [model.second_moments[n] for n, _ in model.named_parameters()]
            for t in (1, 2):  # the training's, scaled to the mean segment so far, then the text's
                step(grads[t - 1])
                scale = sum(float((g * g).sum()) for g in grads[:t] for g in g) / t / sum(float(x.sum()) for x in v)
                for rms, x, *g in zip(step.rms, v, *grads[:t]):
                    torch.testing.assert_close(rms**2, 300 * scale * x + sum(gi * gi for gi in g))
            assert step.steps == 2 and step.primed
            rest = grads[2:]
        for g in rest:
            step(g)
        runs[(prior, moments)] = ([p.detach().clone() for p in model.parameters()], step.primed)
    assert config.adapt_prior == 300  # None: the rms default
    without = runs[(0, True)][0]
    for other in (runs[(300, False)][0], runs[(None, False)][0]):
        assert all(torch.equal(a, b) for a, b in zip(without, other))  # nothing to prime with: as before
    assert not any(torch.equal(a, b) for a, b in zip(without, runs[(300, True)][0]))  # every tensor moved otherwise
    assert [runs[key][1] for key in runs] == [True, False, False, False]
