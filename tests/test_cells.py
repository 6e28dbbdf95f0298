import pytest
import torch

from charlstm.cells import GATES, layer_gates, lstm_step, trace
from charlstm.stepper import TokenStepper
from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import QUANTITIES, ModelConfig
from charlstm.model import LanguageModel


def test_reference_lstm_reproduces_a_trained_fused_layer(tiny_run, small_text):
    model, tokenizer = model_from_checkpoint(load_checkpoint(tiny_run))
    model.eval()
    ids = torch.from_numpy(tokenizer.encode(small_text[:1500]).astype("int64"))  # 1,500 steps
    with torch.no_grad():
        logits, (h, c) = model(ids.view(-1, 1))
    seen = trace(model, ids)
    assert torch.allclose(seen.logits, logits[:, 0], atol=1e-4)
    assert torch.allclose(seen.layers[-1]["hidden"][-1], h[-1, 0], atol=1e-5)
    assert torch.allclose(seen.layers[-1]["cell"][-1], c[-1, 0], atol=1e-5)
    # The gates are probabilities, and the cell obeys c_t = f * c_{t-1} + i * g at every step.
    layer = seen.layers[0]
    for gate in GATES["lstm"]:
        assert 0 <= layer[gate].min() and layer[gate].max() <= 1
    c_prev = torch.cat([torch.zeros(1, layer["cell"].shape[1]), layer["cell"][:-1]])
    assert torch.allclose(
        layer["cell"], layer["forget"] * c_prev + layer["input"] * layer["candidate"], atol=1e-6
    )


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_reference_gru_and_rnn_reproduce_the_fused_layers(cell):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=24, num_layers=2, dropout=0.0, cell=cell)).eval()
    ids = torch.randint(0, 30, (1000,))
    with torch.no_grad():
        logits, (h,) = model(ids.view(-1, 1))
    seen = trace(model, ids)
    assert set(seen.layers[0]) == set(QUANTITIES[cell])
    assert torch.allclose(seen.logits, logits[:, 0], atol=1e-4)
    assert torch.allclose(seen.layers[1]["hidden"][-1], h[1, 0], atol=1e-5)


def test_lstm_step_is_the_written_equations():
    """A hand-made one-unit LSTM: forget gate open, input shut: the cell keeps its value."""
    lstm = torch.nn.LSTM(1, 1)
    with torch.no_grad():
        for p in lstm.parameters():
            p.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([-20.0, 20.0, 0.0, 20.0]))  # i shut, f open, g, o open
    gates = layer_gates(lstm, 0, ("input", "forget", "candidate", "output"))
    h, c, seen = lstm_step(torch.ones(1, 1), torch.zeros(1, 1), torch.full((1, 1), 0.7), gates)
    assert torch.allclose(c, torch.tensor([[0.7]]), atol=1e-6)  # c_t = 1 * 0.7 + 0 * g
    assert torch.allclose(h, torch.tanh(torch.tensor([[0.7]])), atol=1e-6)  # h_t = 1 * tanh(c_t)
    assert seen["forget"].item() > 0.999 and seen["input"].item() < 1e-6


@pytest.mark.parametrize("cell,tanh_by_sigmoid", [("lstm", False), ("lstm", True), ("gru", False), ("rnn", False)])
def test_token_stepper_matches_the_fused_layer_over_a_long_sequence(cell, tanh_by_sigmoid, monkeypatch):
    # tanh_by_sigmoid: h's tanh as 2 * sigmoid(2y) - 1, as a step of many rows computes it
    monkeypatch.setattr("charlstm.stepper.SIGMOID_TANH_MIN", 0 if tanh_by_sigmoid else 1 << 30)
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=12, num_layers=3, dropout=0.0, cell=cell)
    model = LanguageModel(config).eval()
    ids = torch.randint(0, 11, (300, 2))
    with torch.no_grad():
        full, final = model(ids)
        step = TokenStepper(model)
        state = model.init_hidden(2)
        for t in range(300):
            logits, state = step(ids[t], state)
            assert torch.allclose(logits, full[t], atol=1e-5)
    assert len(state) == len(final) == (2 if cell == "lstm" else 1)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(state, final))


def _logprobs_over(stepper, ids: torch.Tensor, hidden) -> torch.Tensor:
    """Log-probabilities (T, V) of a stepper reading ``ids`` (T,) one token at a time."""
    state = stepper.state(hidden)
    return torch.stack([stepper.step_(ids[t : t + 1], state)[0].log_softmax(-1) for t in range(len(ids))])


# How far the lighter weights may move a tiny trained model's next-token log-probabilities over
# 100 steps (nats): the largest change at any step and token, and the mean change (measured:
# int8 0.0018 and 0.0003, bf16 0.0008 and 0.0001).
WEIGHT_TOLERANCE = {"int8": (0.01, 0.002), "bf16": (0.01, 0.002)}


@pytest.mark.parametrize("weights", ["int8", "bf16"])
def test_lighter_weights_stay_within_tolerance_of_fp32(tiny_run, small_text, weights):
    model, tokenizer = model_from_checkpoint(load_checkpoint(tiny_run))
    model.eval()
    ids = torch.from_numpy(tokenizer.encode(small_text[:100]).astype("int64"))  # 100 steps
    with torch.inference_mode():
        exact = _logprobs_over(TokenStepper(model), ids, model.init_hidden(1))
        light = _logprobs_over(TokenStepper(model, weights), ids, model.init_hidden(1))
    change = (light - exact).abs()
    largest, mean = WEIGHT_TOLERANCE[weights]
    assert float(change.max()) < largest and float(change.mean()) < mean
    assert float(change.max()) > 0  # it did use other weights


def test_stepper_in_place_and_new_tensors_agree():
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=12, num_layers=2, dropout=0.0)).eval()
    step = TokenStepper(model)
    with torch.inference_mode():
        hidden = tuple(torch.randn(2, 3, 12) for _ in range(2))
        state = step.state(hidden)
        ids = torch.tensor([1, 5, 7])
        logits, new = step(ids, hidden)
        assert torch.equal(step.step_(ids, state), logits)
        assert all(torch.equal(a, b) for a, b in zip(state.hidden, new))
        assert not torch.equal(new[0], hidden[0])  # the given state is left as it was


def test_with_weights_measures_the_lighter_model(tiny_run, small_text):
    from charlstm.stepper import SteppedModel, with_weights
    from charlstm.errors import ConfigError

    model, tokenizer = model_from_checkpoint(load_checkpoint(tiny_run))
    assert with_weights(model, "fp32") is model
    light = with_weights(model, "int8")
    assert isinstance(light, SteppedModel)
    ids = torch.from_numpy(tokenizer.encode(small_text[:60]).astype("int64")).view(-1, 2)  # (30, 2)
    with torch.inference_mode():
        exact, (h, c) = model.eval()(ids)
        approx, (h8, c8) = light(ids)
    assert approx.shape == exact.shape and h8.shape == h.shape
    assert (approx.log_softmax(-1) - exact.log_softmax(-1)).abs().max() < 0.05
    with pytest.raises(ConfigError, match="--weights must be one of fp32, int8, bf16"):
        with_weights(model, "int4")
