"""``benchmarks/cell_variants.py``: its control cell is the LSTM the fused layer computes, and a
run of each refinement trains through the real CLI and reports its line."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "cell_variants.py"


def _bench():
    spec = importlib.util.spec_from_file_location("cell_variants", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_loop_control_computes_what_nn_lstm_computes():
    torch.manual_seed(0)
    fused = torch.nn.LSTM(8, 16)
    loop = _bench().LoopLSTM(8, 16, "loop")
    with torch.no_grad():
        loop.w_ih.weight.copy_(fused.weight_ih_l0)
        loop.w_ih.bias.copy_(fused.bias_ih_l0 + fused.bias_hh_l0)
        loop.w_hh.weight.copy_(fused.weight_hh_l0)
    x = torch.randn(12, 3, 8)
    hidden = (torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    want, (h, c) = fused(x, hidden)
    got, (h2, c2) = loop(x, hidden)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((h2, c2), (h, c), atol=1e-5, rtol=1e-5)


needs_compiler = pytest.mark.skipif(
    not _bench().compiler_available(), reason="the C++ recurrence needs a C++ compiler and ninja"
)


@pytest.mark.parametrize("variant", ["ln-hand", pytest.param("ln-cpp", marks=needs_compiler)])
def test_the_ln_recurrence_by_hand_has_autograd_s_outputs_and_gradients(variant):
    bench = _bench()
    torch.manual_seed(0)
    steps, batch, inputs, hidden_size = 7, 3, 5, 8
    by_autograd = bench.LoopLSTM(inputs, hidden_size, "ln")
    with torch.no_grad():
        for p in by_autograd.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # LayerNorm's gains and biases away from 1 and 0
    by_hand = bench.LoopLSTM(inputs, hidden_size, variant)
    by_hand.load_state_dict(by_autograd.state_dict())
    x = torch.randn(steps, batch, inputs)
    hidden = (torch.randn(1, batch, hidden_size), torch.randn(1, batch, hidden_size))
    weights = torch.randn(steps, batch, hidden_size)

    def run(model):
        out, (h, c) = model(x, hidden)
        loss = (out * weights).sum() + 0.3 * h.sum() + 0.2 * c.sum()
        return out, torch.autograd.grad(loss, list(model.parameters()))

    want, want_grads = run(by_autograd)
    got, got_grads = run(by_hand)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for (name, _), g, w in zip(by_autograd.named_parameters(), got_grads, want_grads):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    "variant", ["ln", "ln-gates", "ln-cell", "ln-hand", pytest.param("ln-cpp", marks=needs_compiler), "mogrifier"]
)
def test_a_refinement_trains_and_reports(variant, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    done = subprocess.run(
        [sys.executable, str(BENCH), variant, str(text), "--size", "fixed", "--hidden-size", "16",
         "--num-layers", "1", "--batch-size", "2", "--bptt", "8", "--max-steps", "6", "--eval-every", "3",
         "--no-samples", "--device", "cpu", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(rf"{variant}: best validation ([0-9.]+) nats/token, ([0-9,]+) tokens/s", line)
    assert match, line
    assert 0.5 < float(match.group(1)) < 6.0  # a character model's first steps: near log(vocabulary)


def test_two_layers_are_refused(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("abc " * 200)
    done = subprocess.run(
        [sys.executable, str(BENCH), "ln", str(text), "--size", "fixed", "--num-layers", "2", "--hidden-size", "8",
         "--batch-size", "2", "--bptt", "8", "--max-steps", "1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "one LSTM layer (--num-layers 1)" in done.stderr
