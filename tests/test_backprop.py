"""The hand-written window pass (``evaluation.backprop``) against autograd through the fused layer."""

import pytest
import torch
import torch.nn.functional as F

from charlstm.config import ModelConfig
from charlstm.evaluation import backprop
from charlstm.evaluation.adaptation import adapting
from charlstm.model import LanguageModel


def _model(num_layers=2, tie=False, seed=0):
    torch.manual_seed(seed)
    size = 16 if tie else 24
    config = ModelConfig(vocab_size=11, embedding_dim=size if tie else 8, hidden_size=size,
                         num_layers=num_layers, dropout=0.3, tie_weights=tie)
    model = LanguageModel(config)
    with torch.no_grad():  # biases and weights away from their initial zeros
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("num_layers,tie,rows", [(1, False, 1), (2, False, 3), (2, True, 2)])
def test_the_forward_and_the_gradients_are_autograds(num_layers, tie, rows):
    model = _model(num_layers, tie)
    ids = torch.randint(0, 11, (9, rows))
    targets = torch.randint(0, 11, (9, rows))
    hidden = tuple(0.5 * torch.randn(num_layers, rows, model.config.hidden_size) for _ in range(2))
    weights = torch.rand(9, rows)
    weights[2, 0] = 0.0  # a padded row
    params = [p for p in model.parameters() if p.requires_grad]
    with adapting(model):
        logits, features, after = model.forward_features(ids, hidden)
        loss = (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none") * weights.flatten()).sum()
        expected = torch.autograd.grad(loss, params)
    tape = backprop.forward(model, ids, hidden)
    torch.testing.assert_close(tape.logits, logits.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tape.features, features.detach(), atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(tape.hidden, after):
        torch.testing.assert_close(mine, theirs.detach(), atol=1e-5, rtol=1e-5)
    got = backprop.gradients(model, tape, targets, weights, params)
    assert len(got) == len(params) == (2 if tie else 3) + 4 * num_layers
    for (name, _), mine, theirs in zip(((n, p) for n, p in model.named_parameters()), got, expected):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4, msg=name)


def test_a_zero_start_is_no_start_and_only_lstms_are_supported():
    model = _model(1)
    ids = torch.randint(0, 11, (5, 2))
    zeros = model.init_hidden(2)
    assert torch.equal(backprop.forward(model, ids).logits, backprop.forward(model, ids, zeros).logits)
    gru = LanguageModel(ModelConfig(vocab_size=11, embedding_dim=8, hidden_size=8, cell="gru"))
    assert backprop.supports(model) and not backprop.supports(gru)


def test_a_window_taped_by_the_stepper_gives_the_same_gradients():
    from charlstm.stepper import TokenStepper

    model = _model(2).eval()
    ids = torch.randint(0, 11, (6, 3))
    targets = torch.randint(0, 11, (6, 3))
    hidden = tuple(0.5 * torch.randn(2, 3, model.config.hidden_size) for _ in range(2))
    stepper = TokenStepper(model)
    state = stepper.state(hidden)
    steps, logits = [], []
    for t in range(6):
        logits.append(stepper.step_(ids[t], state, tape=steps).clone())
    params = list(model.parameters())
    rows = torch.full((6, 3), 1 / 18)
    taped = backprop.gradients(model, backprop.from_steps(model, ids, hidden, steps, logits), targets, rows, params)
    again = backprop.gradients(model, backprop.forward(model, ids, hidden), targets, rows, params)
    for mine, theirs in zip(taped, again):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_a_truncated_window_is_each_token_backpropagated_depth_steps(depth):
    # Autograd's version of the definition: token t's loss through steps t - depth .. t only,
    # started from the (detached) state the whole window had there.
    model = _model(1)
    T, B = 7, 2
    ids, targets = torch.randint(0, 11, (T, B)), torch.randint(0, 11, (T, B))
    hidden = tuple(0.5 * torch.randn(1, B, model.config.hidden_size) for _ in range(2))
    weights = torch.rand(T, B)
    params = [p for p in model.parameters() if p.requires_grad]
    tape = backprop.forward(model, ids, hidden)
    _, h, c, _, _ = tape.layers[0]
    expected = [torch.zeros_like(p) for p in params]
    with adapting(model):
        for t in range(T):
            s = max(0, t - depth)
            logits, _, _ = model.forward_features(ids[s : t + 1], (h[s][None], c[s][None]))
            loss = (F.cross_entropy(logits[-1], targets[t], reduction="none") * weights[t]).sum()
            for total, grad in zip(expected, torch.autograd.grad(loss, params)):
                total += grad
    got = backprop.gradients(model, tape, targets, weights, params, depth=depth)
    for (name, _), mine, theirs in zip(model.named_parameters(), got, expected):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4, msg=name)
    whole = backprop.gradients(model, tape, targets, weights, params)
    assert not torch.allclose(got[2], whole[2], atol=1e-4)  # weight_hh: the paths cut off mattered
    for mine, theirs in zip(backprop.gradients(model, tape, targets, weights, params, depth=T - 1), whole):
        torch.testing.assert_close(mine, theirs)
