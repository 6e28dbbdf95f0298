import pytest

from charlstm.config import ModelConfig, SampleConfig, TrainConfig
from charlstm.errors import ConfigError


def test_defaults_are_valid():
    TrainConfig()
    SampleConfig()
    ModelConfig(vocab_size=65)


def test_all_problems_reported_at_once_naming_flags():
    with pytest.raises(ConfigError) as e:
        TrainConfig(bptt=0, batch_size=-1, lr=0.0, val_fraction=1.5)
    message = str(e.value)
    for flag in ("--bptt", "--batch-size", "--lr", "--val-fraction"):
        assert flag in message


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"num_layers": 0}, "--num-layers"),
        ({"hidden_size": 0}, "--hidden-size"),
        ({"dropout": 1.0}, "--dropout"),
        ({"tie_weights": True, "embedding_dim": 16, "hidden_size": 32}, "--tie-weights"),
    ],
)
def test_model_config_rejects(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        ModelConfig(vocab_size=10, **kwargs)


PENALTY = "--repetition-penalty must be a positive number, 1 means off"
ONE_BEAM = "--beam-width gives one deterministic sample; leave out --num-samples"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"length": -1}, "--length must be 0 or more (got -1)"),
        ({"temperature": -0.1}, "--temperature must be 0 (greedy) or more (got -0.1)"),
        ({"top_p": 0.0}, "--top-p must be in (0, 1] (got 0.0)"),
        ({"top_p": 1.01}, "--top-p must be in (0, 1] (got 1.01)"),
        ({"top_k": 0}, "--top-k must be at least 1 (got 0)"),
        ({"num_samples": 0}, "--num-samples must be at least 1 (got 0)"),
        ({"stop": ""}, "--stop must not be empty"),
        ({"min_p": 0.0}, "--min-p must be in (0, 1] (got 0.0)"),
        ({"min_p": 1.5}, "--min-p must be in (0, 1] (got 1.5)"),
        ({"min_p": float("nan")}, "--min-p must be in (0, 1] (got nan)"),
        ({"repetition_penalty": 0.0}, PENALTY + " (got 0.0)"),
        ({"repetition_penalty": -1.2}, PENALTY + " (got -1.2)"),
        ({"repetition_penalty": float("inf")}, PENALTY + " (got inf)"),
        ({"repetition_penalty": float("nan")}, PENALTY + " (got nan)"),
        ({"repetition_window": 0}, "--repetition-window must be at least 1 (got 0)"),
        ({"no_repeat_ngram": 0}, "--no-repeat-ngram must be at least 1 (got 0)"),
        ({"beam_width": 0}, "--beam-width must be at least 1 (got 0)"),
        ({"beam_width": 4, "num_samples": 2}, ONE_BEAM),
        ({"beam_width": 1, "num_samples": 3}, ONE_BEAM),
    ],
)
def test_sample_config_rejects(kwargs, message):
    with pytest.raises(ConfigError) as e:
        SampleConfig(**kwargs)
    assert str(e.value) == message


def test_sample_config_reports_every_new_problem_at_once():
    with pytest.raises(ConfigError) as e:
        SampleConfig(min_p=2.0, repetition_penalty=0.0, repetition_window=0, no_repeat_ngram=0, beam_width=0)
    assert str(e.value) == (
        "--min-p must be in (0, 1] (got 2.0); "
        "--repetition-penalty must be a positive number, 1 means off (got 0.0); "
        "--repetition-window must be at least 1 (got 0); "
        "--no-repeat-ngram must be at least 1 (got 0); "
        "--beam-width must be at least 1 (got 0)"
    )


def test_sample_config_accepts_the_new_settings():
    config = SampleConfig(
        min_p=1.0, repetition_penalty=0.5, repetition_window=1, no_repeat_ngram=1, beam_width=1
    )
    assert SampleConfig.from_dict(config.to_dict()) == config


def test_round_trip_and_unknown_keys_ignored():
    config = TrainConfig(bptt=7, max_time=3.5)
    data = config.to_dict()
    assert TrainConfig.from_dict(data) == config
    assert TrainConfig.from_dict({**data, "from_a_newer_version": 1}) == config


def test_eval_every_defaults_to_a_spacing_in_tokens():
    assert TrainConfig(batch_size=32, bptt=64).eval_every == 400
    assert TrainConfig(batch_size=16, bptt=64).eval_every == 800
    assert TrainConfig(batch_size=4, bptt=16).eval_every == 12800
    assert TrainConfig(batch_size=16, eval_every=7).eval_every == 7  # given: kept
    assert TrainConfig.from_dict(TrainConfig(batch_size=8).to_dict()).eval_every == TrainConfig(batch_size=8).eval_every
