"""evaluation/states.py: a long stream's states read as parallel parts, in the text's order."""

import numpy as np
import pytest
import torch

from charlstm.config import ModelConfig
from charlstm.evaluation import states
from charlstm.model import LanguageModel


def one_stream(model, ids):
    """The states and log-probabilities of ``ids`` read as one stream, one call."""
    x = torch.from_numpy(ids.astype(np.int64))[:, None]
    with torch.inference_mode():
        logits, out, _ = model.forward_features(x[:-1])
    return out[:, 0], logits.log_softmax(-1)[:, 0].gather(-1, x[1:])[:, 0]


@pytest.fixture
def small_parts(monkeypatch):
    """Parts of 64 rows, two to a block, 16 tokens of warm-up: many blocks in a short stream."""
    monkeypatch.setattr(states, "PART_TOKENS", 64)
    monkeypatch.setattr(states, "BLOCK_PARTS", 2)
    monkeypatch.setattr(states, "PART_WARMUP", 16)
    monkeypatch.setattr(states, "WINDOW", 24)


def test_parts_come_out_in_order_and_each_block_carries_the_last_state_on(small_parts):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=12, embedding_dim=8, hidden_size=24, num_layers=2)).eval()
    ids = np.random.default_rng(0).integers(0, 12, size=1000)
    features, log_p = one_stream(model, ids)
    seen = 0
    for start, f, lp, targets in states.stream_states(model, ids, 40, "cpu"):
        assert start == seen and len(f) == len(lp) == len(targets) <= 40
        assert targets.tolist() == ids[start + 1 : start + 1 + len(targets)].tolist()
        if start % 128 < 64:  # a block's first part carries on exactly the state the one-stream read has
            assert torch.allclose(f, features[start : start + len(f)], atol=1e-5)
            assert torch.allclose(lp, log_p[start : start + len(lp)], atol=1e-5)
        else:  # a warm part: close once it has read a little of its own
            assert torch.allclose(f[16:], features[start + 16 : start + len(f)], atol=0.05)
        seen += len(targets)
    assert seen == len(ids) - 1


def test_a_stream_of_one_part_is_read_exactly():
    torch.manual_seed(1)
    model = LanguageModel(ModelConfig(vocab_size=12, embedding_dim=8, hidden_size=24, num_layers=1)).eval()
    ids = np.random.default_rng(1).integers(0, 12, size=700)
    features, log_p = one_stream(model, ids)
    got = list(states.stream_states(model, ids, 512, "cpu"))
    assert [g[0] for g in got] == [0, 512]
    assert torch.allclose(torch.cat([g[1] for g in got]), features, atol=1e-5)
    assert torch.allclose(torch.cat([g[2] for g in got]), log_p, atol=1e-5)
