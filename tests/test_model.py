import pytest
import torch

from charlstm.config import ModelConfig
from charlstm.model import LanguageModel, detach_hidden


def tiny(**kwargs) -> LanguageModel:
    torch.manual_seed(0)
    options = {"vocab_size": 11, "embedding_dim": 8, "hidden_size": 12, "num_layers": 2, "dropout": 0.0}
    return LanguageModel(ModelConfig(**{**options, **kwargs}))


def test_shapes_and_state():
    model = tiny()
    ids = torch.randint(0, 11, (5, 3))  # (T, B)
    logits, (h, c) = model(ids, model.init_hidden(3))
    assert logits.shape == (5, 3, 11)
    assert h.shape == c.shape == (2, 3, 12)


def test_carrying_state_across_windows_equals_one_long_pass():
    model = tiny().eval()
    ids = torch.randint(0, 11, (20, 2))
    full, _ = model(ids)
    state = model.init_hidden(2)
    parts = []
    for start in range(0, 20, 6):
        logits, state = model(ids[start : start + 6], state)
        state = detach_hidden(state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts), full, atol=1e-6)


def test_detach_hidden_cuts_the_graph():
    model = tiny()
    _, state = model(torch.randint(0, 11, (4, 2)))
    assert state[0].requires_grad
    detached = detach_hidden(state)
    assert not detached[0].requires_grad and torch.equal(detached[0], state[0])


def test_tied_weights_share_one_tensor_and_parameter_count():
    tied = tiny(embedding_dim=12, tie_weights=True)
    untied = tiny(embedding_dim=12)
    assert tied.head.weight is tied.embedding.weight
    assert untied.num_parameters() - tied.num_parameters() == 11 * 12


def test_init_hidden_follows_device_and_dtype():
    model = tiny().to(torch.float64)
    h, c = model.init_hidden(4)
    assert h.dtype == torch.float64 and h.abs().sum() == 0


@pytest.mark.parametrize("cell, layer_class", [("gru", torch.nn.GRU), ("rnn", torch.nn.RNN)])
def test_other_cells_carry_a_one_tensor_state(cell, layer_class):
    model = tiny(cell=cell).eval()
    assert type(model.rnn) is layer_class
    assert cell != "rnn" or model.rnn.nonlinearity == "tanh"
    ids = torch.randint(0, 11, (5, 3))
    logits, state = model(ids, model.init_hidden(3))
    assert logits.shape == (5, 3, 11) and len(state) == 1 and state[0].shape == (2, 3, 12)
    _, first = model(ids[:2])
    rest, _ = model(ids[2:], detach_hidden(first))  # carried across a window boundary
    assert torch.allclose(rest, logits[2:], atol=1e-6)


def test_weight_drop_masks_the_recurrent_matrices_in_training_only():
    """--weight-drop: a fresh DropConnect mask on W_hh per training forward (gradients reach the
    kept weights only), and none in eval mode (the same logits twice)."""
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=16, weight_drop=0.5))
    ids = torch.randint(0, 11, (12, 3))
    model.train()
    first, _ = model(ids)
    second, _ = model(ids)
    assert not torch.equal(first, second)  # two masks
    plain = LanguageModel(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=16))
    plain.load_state_dict(model.state_dict())
    plain.train()
    plain.dropout.p = model.dropout.p = 0.0
    torch.manual_seed(1)
    masked, _ = model(ids)
    masked.sum().backward()
    grad = model.rnn.weight_hh_l0.grad
    assert 0.3 < float((grad == 0).float().mean()) < 0.7  # about half the entries got no gradient
    model.eval()
    plain.eval()
    a, _ = model(ids)
    b, _ = model(ids)
    assert torch.equal(a, b) and torch.allclose(a, plain(ids)[0])  # no mask outside training
