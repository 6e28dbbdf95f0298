import math

import pytest
import torch

from charlstm.analysis.memory_probes import eta_squared, forget_gate_trace, gradient_norms
from charlstm.analysis.memory_tasks import MemoryModel, MemoryTask

RECALL = MemoryTask("recall")


def _model(cell, hidden, forget_bias=1.0):
    torch.manual_seed(0)
    return MemoryModel(cell, RECALL, 16, hidden, forget_bias)


@pytest.mark.slow
def test_a_tanh_rnns_gradient_vanishes_and_an_open_lstm_cell_path_keeps_it():
    rnn = dict(gradient_norms(_model("rnn", 134), RECALL, 60))
    lstm = dict(gradient_norms(_model("lstm", 64, forget_bias=3.0), RECALL, 60))
    start = 60 + 2  # the state before the symbol
    assert sorted(rnn) == [0, 1, 3, 10, 30, start - 1, start]
    assert rnn[start] < 1e-6 * rnn[0]
    assert lstm[start] > 1e3 * rnn[start] and lstm[start] > 1e-3 * lstm[0]


def test_forget_gate_trace_finds_units_and_reads_the_gates_bias():
    trace = forget_gate_trace(_model("lstm", 32, forget_bias=3.0), RECALL, 20)
    assert len(trace["units"]) == 3 and len(set(trace["units"])) == 3
    assert all(0.0 <= e <= 1.0 for e in trace["eta_squared"])
    assert trace["eta_squared"] == sorted(trace["eta_squared"], reverse=True)
    # an untrained gate sits near sigmoid(3) = 0.95; its product over the 20 distractors near 0.95^20
    everyone = trace["all_units_forget_by_step"]
    assert len(everyone) == 20 + 2 and all(abs(f - 1 / (1 + math.exp(-3))) < 0.05 for f in everyone)
    for kept, mean in zip(trace["kept"], trace["mean_forget"]):
        assert 0.5 * mean**20 < kept <= 1.0


def test_eta_squared_is_one_for_a_function_of_the_group_and_near_zero_for_noise():
    groups = torch.arange(4000) % 8
    values = torch.stack([groups.float() * 2 - 3, torch.randn(4000, generator=torch.Generator().manual_seed(0))], 1)
    explained = eta_squared(values, groups)
    assert abs(float(explained[0]) - 1.0) < 1e-6 and float(explained[1]) < 0.01
    assert float(eta_squared(torch.ones(10, 1), torch.arange(10) % 2)[0]) == 0.0  # constant: nothing to explain
