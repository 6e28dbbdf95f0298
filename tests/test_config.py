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


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"length": -1}, "--length"),
        ({"temperature": -0.1}, "--temperature"),
        ({"top_p": 0.0}, "--top-p"),
        ({"top_p": 1.01}, "--top-p"),
        ({"top_k": 0}, "--top-k"),
        ({"num_samples": 0}, "--num-samples"),
        ({"stop": ""}, "--stop"),
    ],
)
def test_sample_config_rejects(kwargs, flag):
    with pytest.raises(ConfigError, match=flag):
        SampleConfig(**kwargs)


def test_round_trip_and_unknown_keys_ignored():
    config = TrainConfig(bptt=7, max_time=3.5)
    data = config.to_dict()
    assert TrainConfig.from_dict(data) == config
    assert TrainConfig.from_dict({**data, "from_a_newer_version": 1}) == config
