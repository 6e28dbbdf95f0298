"""Looking inside the long-range experiment's models that learnt, with the reference cells
(``charlstm.cells``), where every step's state and gate is a tensor one can hold:

- **gradients**: the norm of the recall loss's gradient with respect to the hidden state k steps
  before the query, ||∂loss/∂h_{T-k}||, on each cell's model trained at the longest distance it
  solved, over sequences of the longest distance run: how far back a learning signal reaches.
- **forget gates**: on the LSTM that solved the longest distance, the units whose cell state
  holds the remembered symbol, and their forget gate f at every step: the cell path
  ``c_t = f ⊙ c_{t-1} + i ⊙ g`` seen carrying the symbol across the distractors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from charlstm.cells import cell_gates, step
from charlstm.analysis.memory_tasks import MemoryModel, MemoryTask

GRADIENT_SEQUENCES = 64
GATE_SEQUENCES = 256
MEMORY_UNITS = 3


def probe(report) -> None:
    """Fill ``report.gradients`` and ``report.forget_gates`` from the recall models that learnt
    (single-distance runs: a curriculum's model moved on from the distances it solved)."""
    config = report.config
    if "recall" not in config.tasks or config.curriculum:
        return
    task = MemoryTask("recall")
    longest = max(config.distances)
    for model, cell, forget_bias in config.variants():
        distance = report.longest_solved("recall", model)
        if distance is None:
            report.gradients[model] = {"trained_at": None, "norms": []}
            continue
        learnt = _learnt_model(report, task, model, cell, forget_bias, distance)
        report.gradients[model] = {"trained_at": distance, "norms": gradient_norms(learnt, task, longest)}
    lstms = [
        (report.longest_solved("recall", model), -i, model, bias)
        for i, (model, cell, bias) in enumerate(config.variants())
        if cell == "lstm" and report.longest_solved("recall", model) is not None
    ]
    if lstms:
        distance, _, model, forget_bias = max(lstms)
        learnt = _learnt_model(report, task, model, "lstm", forget_bias, distance)
        report.forget_gates = {
            "model": model,
            "distance": distance,
            **forget_gate_trace(learnt, task, distance),
        }


def _learnt_model(report, task: MemoryTask, model: str, cell: str, forget_bias, distance: int) -> MemoryModel:
    """The first seed's model that solved ``distance``."""
    result = next(r for r in report.runs("recall", model, distance) if r.steps is not None)
    learnt = MemoryModel(cell, task, report.config.embedding_dim, result.hidden_size, forget_bias)
    learnt.load_state_dict(report.weights[("recall", model, distance, result.seed)])
    return learnt


def gradient_norms(model: MemoryModel, task: MemoryTask, distance: int) -> list[tuple[int, float]]:
    """Mean over sequences of ||∂loss/∂h_{T-k}|| (each sequence's own loss) for k = 0, 1, 3, 10,
    30, ... up to the sequence start."""
    generator = torch.Generator().manual_seed(20_000 + distance)
    ids, target = task.batch(distance, GRADIENT_SEQUENCES, generator)
    gates = cell_gates(model.rnn, model.cell)[0]
    x_all = model.embedding(ids).detach()  # (T, B, E)
    h = x_all.new_zeros(ids.shape[1], model.rnn.hidden_size)
    c = torch.zeros_like(h)
    hs = []
    for x in x_all:
        h = h.detach().requires_grad_() if not hs else h
        h.retain_grad()
        hs.append(h)
        h, c, _ = step(model.cell, x, h, c, gates)
    h.retain_grad()
    hs.append(h)  # h_T, read by the classifier
    loss = F.cross_entropy(model.head(h), target[0], reduction="sum")  # each row: its own sequence's gradient
    loss.backward()
    last = len(hs) - 1
    # ... and the state just after reading the symbol (k = last - 1), where the memory is written
    ks = sorted({0, 1, 3} | {k for k in (10, 30, 100, 300, 1000, 3000) if k <= last} | {last - 1, last})
    return [(k, float(hs[last - k].grad.norm(dim=1).mean())) for k in ks]


def eta_squared(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Per column of ``values`` (N, H): the share of its variance that ``groups`` (N,) explains,
    in [0, 1] (between-group sum of squares over the total)."""
    centred = values - values.mean(0)
    between = sum((groups == g).sum() * centred[groups == g].mean(0) ** 2 for g in groups.unique())
    return between / (centred**2).sum(0).clamp_min(1e-12)


@torch.no_grad()
def forget_gate_trace(model: MemoryModel, task: MemoryTask, distance: int) -> dict:
    """The units whose cell state (just before the query) best separates the remembered symbols,
    and the forget gate along the sequence: theirs, and the mean over all units.

    A unit's separation is η², the share of its cell state's variance across sequences that the
    symbol explains (1: the unit is a pure function of the symbol; 0: it knows nothing of it).
    """
    generator = torch.Generator().manual_seed(30_000 + distance)
    ids, target = task.batch(distance, GATE_SEQUENCES, generator)
    gates = cell_gates(model.rnn, "lstm")[0]
    x_all = model.embedding(ids)
    h = x_all.new_zeros(ids.shape[1], model.rnn.hidden_size)
    c = torch.zeros_like(h)
    forget = []
    for x in x_all:
        h, c_next, seen = step("lstm", x, h, c, gates)
        forget.append(seen["forget"])  # (B, H)
        before_query, c = c, c_next
    forget = torch.stack(forget)  # (T, B, H)
    explained = eta_squared(before_query, target[0])
    units = explained.argsort(descending=True)[:MEMORY_UNITS].tolist()
    held = forget[1:-1]  # the steps over the distractors (the symbol is written at step 0)
    return {
        "units": units,
        "eta_squared": [round(float(explained[u]), 4) for u in units],
        "mean_forget": [round(float(held[:, :, u].mean()), 4) for u in units],
        "kept": [float(held[:, :, u].prod(0).mean()) for u in units],  # ∏ f over the distractors
        "forget_by_step": [[round(float(v), 4) for v in forget[:, :, u].mean(1)] for u in units],
        "all_units_forget_by_step": [round(float(v), 4) for v in forget.mean((1, 2))],
    }
