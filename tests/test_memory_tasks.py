import torch

from charlstm.analysis.memory_tasks import MemoryModel, MemoryTask, accuracy, count_parameters, hidden_for_budget


def test_recall_batch_puts_the_symbol_first_distractors_between_and_the_query_last():
    task = MemoryTask("recall")
    ids, target = task.batch(7, 5, torch.Generator().manual_seed(0))
    assert ids.shape == (9, 5) and target.shape == (1, 5)
    assert torch.equal(ids[0], target[0]) and int(target.max()) < 8
    assert bool(((ids[1:-1] >= 8) & (ids[1:-1] < 16)).all())  # only distractors in between
    assert bool((ids[-1] == 16).all()) and task.vocab_size == 17 and task.answers == 1


def test_copy_batch_asks_for_every_symbol_in_order_after_blanks():
    task = MemoryTask("copy")
    ids, target = task.batch(3, 2, torch.Generator().manual_seed(0))
    assert ids.shape == (4 + 3 + 4, 2) and target.shape == (4, 2)
    assert torch.equal(ids[:4], target)
    assert ids[4:7].tolist() == [[8, 8]] * 3 and ids[7:].tolist() == [[9, 9]] * 4
    assert task.vocab_size == 10


def test_cells_get_the_same_parameter_budget_and_the_count_is_exact():
    task = MemoryTask("recall")
    budget = count_parameters("lstm", 64, task, 16)
    for cell in ("lstm", "gru", "rnn"):
        hidden = hidden_for_budget(cell, budget, task, 16)
        model = MemoryModel(cell, task, 16, hidden, forget_bias=1.0)
        assert sum(p.numel() for p in model.parameters()) == count_parameters(cell, hidden, task, 16)
        assert abs(count_parameters(cell, hidden, task, 16) - budget) / budget < 0.01, cell
    assert hidden_for_budget("gru", budget, task, 16) == 75 and hidden_for_budget("rnn", budget, task, 16) == 134


def test_accuracy_counts_every_answer_on_held_out_sequences():
    task = MemoryTask("copy")
    model = MemoryModel("lstm", task, 4, 8, forget_bias=1.0)
    with torch.no_grad():  # a head that always says symbol 2: right on exactly the answers that are 2
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(8) == 2)
    _, target = task.batch(5, 300, torch.Generator().manual_seed(9), held_out=True)
    assert accuracy(model, task, 5, 300, seed=9) == int((target == 2).sum()) / target.numel()


def test_copy_scores_only_symbol_tuples_it_never_trains_on():
    task = MemoryTask("copy")

    def tuples(held_out):
        _, target = task.batch(1, 20_000, torch.Generator().manual_seed(1), held_out=held_out)
        return {tuple(column) for column in target.T.tolist()}

    trained, scored = tuples(False), tuples(True)
    assert not trained & scored
    assert len(scored) == len(range(0, 8**4, 7)) and len(trained) > 3000  # every held-out tuple, most others
