"""``charlstm.lnlstm``: the layer-normalised LSTM. Its C++ recurrence computes what the equations
in Python compute (outputs and every gradient), the one-token stepper and the reference cells agree
with the layer, a machine without a compiler trains it in Python and is told so, and it trains,
samples, measures and exports through the real CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from charlstm import lnlstm
from charlstm.cells import trace
from charlstm.stepper import TokenStepper, with_weights
from charlstm.config import ModelConfig
from charlstm.lnlstm import LNLSTM, kernel
from charlstm.model import LanguageModel, count_parameters
from tests.conftest import run_cli

needs_kernel = pytest.mark.skipif(
    not kernel.compiler_available(), reason="the C++ recurrence needs a C++ compiler, ninja and Python headers"
)


@pytest.fixture
def in_python(monkeypatch):
    """Every window runs the Python recurrence, as on a machine without a compiler."""
    monkeypatch.setattr(kernel, "usable", lambda x: False)


def _layer(inputs=5, hidden=8, layers=2, seed=0) -> LNLSTM:
    torch.manual_seed(seed)
    layer = LNLSTM(inputs, hidden, layers)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # the gains and LN biases away from 1 and 0
    return layer


def _outputs_and_gradients(layer, x, hidden, weights):
    out, (h, c) = layer(x, hidden)
    loss = (out * weights).sum() + 0.3 * h.sum() + 0.2 * c.sum()
    return (out, h, c), torch.autograd.grad(loss, list(layer.parameters()))


@needs_kernel
def test_the_c_plus_plus_recurrence_has_the_equations_outputs_and_gradients(monkeypatch):
    layer = _layer()
    x = torch.randn(7, 3, 5)
    hidden = (torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    weights = torch.randn(7, 3, 8)
    assert kernel.usable(x) and kernel.status() == kernel.KernelStatus(True)
    got, got_grads = _outputs_and_gradients(layer, x, hidden, weights)
    monkeypatch.setattr(kernel, "usable", lambda x: False)
    want, want_grads = _outputs_and_gradients(layer, x, hidden, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    names = [name for name, _ in layer.named_parameters()]
    assert len(names) == 18  # nine a layer: two matrices, W_ih's bias, three LNs' gains and biases
    for name, g, w in zip(names, got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4, msg=name)


@needs_kernel
def test_in_bfloat16_the_products_round_and_held_outputs_are_not_written_over():
    """Under bf16 autocast the products take bfloat16 (as the fused layer's do), the rest float32;
    a window whose output is still held gets fresh buffers, and a free one is reused."""
    layer = _layer(6, 16, 1, seed=1)
    x = torch.randn(5, 4, 6)
    with torch.no_grad():
        exact, _ = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded, _ = layer(x)
        assert rounded.dtype == torch.float32
        assert 0 < (rounded - exact).abs().max() < 0.05  # bfloat16 products: close, not equal
        kept = exact.clone()
        again, _ = layer(x)  # ``exact`` is still held: its buffer is not written over
        torch.testing.assert_close(exact, kept, rtol=0, atol=0)
        torch.testing.assert_close(again, exact, rtol=0, atol=0)
        pointer = again.data_ptr()
        del again, exact
        third, _ = layer(x)
        assert third.data_ptr() == pointer  # nothing held the third window's buffer: it was reused
        torch.testing.assert_close(third, kept, rtol=0, atol=0)


def test_a_float64_layer_keeps_its_precision_in_python():
    layer = _layer().double()
    x = torch.randn(4, 2, 5, dtype=torch.float64)
    assert not kernel.usable(x)
    out, (h, c) = layer(x)
    assert out.dtype == h.dtype == c.dtype == torch.float64


def _model(layers=2, vocab=30) -> LanguageModel:
    torch.manual_seed(0)
    config = ModelConfig(cell="ln-lstm", vocab_size=vocab, embedding_dim=16, hidden_size=32, num_layers=layers)
    model = LanguageModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("layers,tanh_by_sigmoid", [(1, False), (2, False), (2, True)])
def test_the_stepper_and_the_reference_cells_compute_what_the_layer_computes(layers, tanh_by_sigmoid, monkeypatch):
    monkeypatch.setattr("charlstm.stepper.SIGMOID_TANH_MIN", 0 if tanh_by_sigmoid else 1 << 30)
    model = _model(layers)
    ids = torch.randint(0, 30, (40,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits, (h, c) = model(ids.view(-1, 1))
    torch.testing.assert_close(trace(model, ids).logits, logits[:, 0], atol=1e-5, rtol=1e-5)
    stepper = TokenStepper(model)
    state = stepper.state(None, 1)
    steps = torch.stack([stepper.step_(ids[t : t + 1], state, token=int(ids[t])).clone() for t in range(40)])
    torch.testing.assert_close(steps[:, 0], logits[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(state.hidden, (h, c), atol=1e-4, rtol=1e-4)  # c grows: float32 sums
    with torch.no_grad():  # bf16 recurrent products: close to the float model, not equal
        rounded, _ = with_weights(model, "bf16")(ids.view(-1, 1))
    assert 0 < (rounded - logits).abs().max() < 0.2


def test_a_large_vocabulary_multiplies_its_input_instead_of_a_table(monkeypatch):
    monkeypatch.setattr("charlstm.stepper.INPUT_TABLE_LIMIT", 0)
    model = _model(1)
    stepper = TokenStepper(model)
    assert stepper.table is None
    ids = torch.tensor([[3, 4], [5, 6], [7, 8]])  # (T, B): two rows at once
    with torch.no_grad():
        logits, _ = model(ids)
    state = stepper.state(None, 2)
    for t in range(3):
        torch.testing.assert_close(stepper.step_(ids[t], state), logits[t], atol=1e-5, rtol=1e-5)


def test_its_parameters_are_counted_without_building_it():
    model = _model(2)
    assert count_parameters(model.config) == model.num_parameters()
    assert set(lnlstm.parameter_shapes(16, 32, 0)) == {f"{name}_l0" for name in lnlstm.PARAMETERS}


def test_without_a_compiler_it_says_why_and_trains_in_python(monkeypatch, tmp_path, small_text):
    monkeypatch.setattr(kernel, "_status", None)
    monkeypatch.setattr(kernel, "_kernel", None)
    monkeypatch.setattr(kernel, "compiler_available", lambda: False)
    assert kernel.status() == kernel.KernelStatus(False, "no C++ compiler, ninja and Python headers here to build its C++ recurrence")
    text = tmp_path / "text.txt"
    text.write_text(small_text[:4000])
    result = run_cli(
        "train", text, "--cell", "ln-lstm", "--size", "fixed", "--hidden-size", "16", "--batch-size", "4",
        "--bptt", "16", "--max-steps", "4", "--no-samples", "--device", "cpu", "--out", tmp_path / "run",
    )
    assert result.returncode == 0, result.stderr
    assert (
        "warning: --cell ln-lstm: no C++ compiler, ninja and Python headers here to build its C++ recurrence; "
        "its recurrence runs in Python, about a third as fast (Debian: apt install g++ ninja-build python3-dev)"
    ) in result.stderr
    assert (tmp_path / "run" / "best.pt").exists()


def test_it_trains_samples_measures_compresses_and_exports_through_the_cli(tmp_path, small_text, monkeypatch):
    text = tmp_path / "text.txt"
    text.write_text(small_text[:20000])
    run = tmp_path / "run"
    result = run_cli(
        "train", text, "--cell", "ln-lstm", "--size", "fixed", "--hidden-size", "32", "--num-layers", "2",
        "--batch-size", "8", "--bptt", "32", "--max-steps", "40", "--eval-every", "20", "--no-samples",
        "--device", "cpu", "--seed", "1", "--out", run,
    )
    assert result.returncode == 0, result.stderr
    info = run_cli("info", run)
    assert "ln-lstm 2x32" in info.stdout
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(small_text[18000:20000])
    static = run_cli("eval", run, held_out, "--json")
    assert static.returncode == 0, static.stderr
    uniform = math.log(len(set(small_text[:20000])) + 1)  # every character alike (and the unknown one)
    assert json.loads(static.stdout)["loss"] < uniform - 0.5  # it learnt
    sample = run_cli("sample", run, "--length", "60", "--seed", "3", "--prime", "The ")
    assert sample.returncode == 0 and sample.stdout.startswith("The ") and len(sample.stdout) >= 60
    again = run_cli("sample", run, "--length", "60", "--seed", "3", "--prime", "The ")
    assert again.stdout == sample.stdout
    # compress with --adapt: lossless, and the windows it learns from run in Python (the same floats
    # whether or not a machine could build the C++ recurrence)
    monkeypatch.setattr(kernel.CppLNRecurrence, "apply", lambda *a: pytest.fail("compress ran the C++ recurrence"))
    packed = run_cli("compress", run, held_out, "--adapt")
    assert packed.returncode == 0, packed.stderr
    original = held_out.read_bytes()
    held_out.unlink()
    unpacked = run_cli("decompress", run, tmp_path / "held_out.txt.clstm")
    assert unpacked.returncode == 0, unpacked.stderr
    assert held_out.read_bytes() == original
    pytest.importorskip("onnx")
    onnx = run_cli("export", run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert onnx.returncode == 0, onnx.stderr
    assert (tmp_path / "m.onnx").stat().st_size > 4 * 32 * (32 + 32) * 2  # both layers' matrices, at least
