import pytest
import torch

from charlstm.config import ModelConfig
from charlstm.model import LSTMLanguageModel, TokenStepper, detach_state


def tiny(**kwargs) -> LSTMLanguageModel:
    torch.manual_seed(0)
    options = {"vocab_size": 11, "embedding_dim": 8, "hidden_size": 12, "num_layers": 2, "dropout": 0.0}
    return LSTMLanguageModel(ModelConfig(**{**options, **kwargs}))


def test_shapes_and_state():
    model = tiny()
    ids = torch.randint(0, 11, (5, 3))  # (T, B)
    logits, (h, c) = model(ids, model.init_state(3))
    assert logits.shape == (5, 3, 11)
    assert h.shape == c.shape == (2, 3, 12)


def test_carrying_state_across_windows_equals_one_long_pass():
    model = tiny().eval()
    ids = torch.randint(0, 11, (20, 2))
    full, _ = model(ids)
    state = model.init_state(2)
    parts = []
    for start in range(0, 20, 6):
        logits, state = model(ids[start : start + 6], state)
        state = detach_state(state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts), full, atol=1e-6)


def test_detach_state_cuts_the_graph():
    model = tiny()
    _, state = model(torch.randint(0, 11, (4, 2)))
    assert state[0].requires_grad
    detached = detach_state(state)
    assert not detached[0].requires_grad and torch.equal(detached[0], state[0])


def test_tied_weights_share_one_tensor_and_parameter_count():
    tied = tiny(embedding_dim=12, tie_weights=True)
    untied = tiny(embedding_dim=12)
    assert tied.head.weight is tied.embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == 11 * 12


def test_init_state_follows_device_and_dtype():
    model = tiny().to(torch.float64)
    h, c = model.init_state(4)
    assert h.dtype == torch.float64 and h.abs().sum() == 0


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_token_stepper_matches_the_fused_layer_over_a_long_sequence(cell):
    model = tiny(num_layers=3, cell=cell).eval()
    ids = torch.randint(0, 11, (300, 2))
    with torch.no_grad():
        full, final = model(ids)
        step = TokenStepper(model)
        state = model.init_state(2)
        for t in range(300):
            logits, state = step(ids[t], state)
            assert torch.allclose(logits, full[t], atol=1e-5)
    assert len(state) == len(final) == (2 if cell == "lstm" else 1)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state, final))


@pytest.mark.parametrize("cell, layer_class", [("gru", torch.nn.GRU), ("rnn", torch.nn.RNN)])
def test_other_cells_carry_a_one_tensor_state(cell, layer_class):
    model = tiny(cell=cell).eval()
    assert type(model.rnn) is layer_class
    assert cell != "rnn" or model.rnn.nonlinearity == "tanh"
    ids = torch.randint(0, 11, (5, 3))
    logits, state = model(ids, model.init_state(3))
    assert logits.shape == (5, 3, 11) and len(state) == 1 and state[0].shape == (2, 3, 12)
    _, first = model(ids[:2])
    rest, _ = model(ids[2:], detach_state(first))  # carried across a window boundary
    assert torch.allclose(rest, logits[2:], atol=1e-6)


def test_weights_saved_under_the_old_layer_name_still_load():
    from charlstm.model import upgrade_state_dict

    model = tiny()
    old = {k.replace("rnn.", "lstm.", 1): v for k, v in model.state_dict().items()}
    assert any(k.startswith("lstm.") for k in old)
    tiny().load_state_dict(upgrade_state_dict(old))


def test_precision_auto_follows_the_cpu(monkeypatch):
    import charlstm.model as m
    from charlstm.errors import ConfigError

    cpu = torch.device("cpu")
    monkeypatch.setattr(m, "cpu_has_fast_bf16", lambda: False)
    assert m.resolve_precision("auto", cpu)[0] is None
    assert m.resolve_precision("fp32", cpu)[0] is None
    with pytest.raises(ConfigError, match="--precision bf16: this CPU has no bf16 hardware"):
        m.resolve_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="--precision fp16 is for CUDA GPUs"):
        m.resolve_precision("fp16", cpu)
    monkeypatch.setattr(m, "cpu_has_fast_bf16", lambda: True)
    assert m.resolve_precision("auto", cpu)[0] == torch.bfloat16
    assert m.resolve_precision("bf16", cpu)[0] == torch.bfloat16
