import json
from dataclasses import replace

import pytest

from charlstm.analysis.config import ExperimentConfig
from charlstm.errors import ConfigError
from charlstm.analysis.experiment import Job, Report, Result, data_generator, plan, run_experiment, train_job
from charlstm.analysis.memory_tasks import MemoryTask


def _result(model, distance, seed, steps, accuracy, task="recall"):
    return Result(task, model, "lstm", distance, seed, 64, 21_784, steps, accuracy, accuracy, 1.0)


def test_config_names_every_bad_value_by_its_flag():
    with pytest.raises(ConfigError) as error:
        ExperimentConfig(tasks=("recall", "adding"), distances=(0, 10), seeds=0, hidden_size=10_000)
    assert str(error.value) == (
        "--tasks must be some of recall, copy (got recall, adding); --distances must be whole numbers from 1 to "
        "100000 (got 0, 10); --seeds must be at least 1 (got 0); --hidden-size must be from 1 to 4096 (got 10000)"
    )


def test_summary_gives_solved_seeds_median_steps_and_range_and_the_doubling_check():
    report = Report(ExperimentConfig(budget=100))
    report.results = [
        _result("LSTM", 30, 0, 150, 1.0),  # solved only after the budget: the doubling changed it
        _result("LSTM", 30, 1, 50, 1.0),
        _result("LSTM", 30, 2, None, 0.13),
        _result("GRU", 30, 0, None, 0.2),
    ]
    assert report.summary("recall", "LSTM", 30) == {
        "seeds": 3,
        "solved": 2,
        "median_steps": 100,
        "steps": [50, 150],
        "median_accuracy": 1.0,
        "accuracy_range": (0.13, 1.0),
    }
    assert report.summary("recall", "LSTM", 30, within=100)["solved"] == 1
    assert [(r.model, r.seed) for r in report.needed_the_doubling()] == [("LSTM", 0)]
    assert report.longest_solved("recall", "LSTM") == 30 and report.longest_solved("recall", "GRU") is None
    assert report.still_learning() == []
    rising = replace(_result("RNN", 30, 0, None, 0.8), accuracy_at_budget=0.13)  # unsolved, but 13% -> 80%
    report.results.append(rising)
    assert report.still_learning() == [rising] and report.needed_the_doubling()[0].model == "LSTM"


def test_plan_has_every_cell_distance_and_seed_with_equal_budgets_longest_first():
    config = ExperimentConfig()
    jobs = plan(config, "cpu")
    assert len(jobs) == 4 * 3 * (3 + 3)  # variants x seeds x (recall + copy distances)
    assert [j.distances for j in jobs[:3]] == [(100,)] * 3
    hidden = {(j.task, j.model): j.hidden_size for j in jobs}
    assert hidden[("recall", "GRU")] == 75 and hidden[("recall", "RNN")] == 134
    curriculum = plan(replace(config, curriculum=True), "cpu")
    assert len(curriculum) == 4 * 3 * 2 and curriculum[0].distances == (10, 30, 100)


def test_a_model_trains_until_solved_and_a_curriculum_stops_at_the_first_distance_it_cannot_solve():
    config = ExperimentConfig.quick(budget=60, curriculum=True)
    job = Job(config, "recall", "LSTM, forget bias 3", "lstm", 3.0, 16, (3, 4, 100, 200), seed=0)
    results, weights = train_job(job)
    solved, untaught, failed = (
        results  # 3 is learnt; 4 needs no more; 100 is not, in 120 steps; 200 never tried
    )
    assert untaught.distance == 4 and untaught.steps == 0 and untaught.accuracy >= 0.97
    assert solved.distance == 3 and solved.steps is not None and solved.steps % 25 == 0
    assert solved.accuracy >= config.solved_at - 0.02  # the final score is on fresh held-out sequences
    assert failed.distance == 100 and failed.steps is None and failed.accuracy < config.solved_at
    assert set(weights) >= {"embedding.weight", "rnn.weight_hh_l0", "head.weight"}
    again, _ = train_job(job)
    assert [r.steps for r in again] == [r.steps for r in results]  # seeded: the same run again


def test_the_check_scores_at_the_budget_and_at_twice_it_even_between_regular_evaluations():
    # budget 45: evaluations at 25 and 45 (the budget), 50, 75 and 90 (twice the budget)
    config = ExperimentConfig.quick(budget=45, eval_every=25)
    job = Job(config, "recall", "RNN", "rnn", None, 37, (5,), seed=0)
    (result,), _ = train_job(job)
    assert result.steps in (25, 45, 50, 75, 90), result  # solved at one of the evaluations
    late = Job(replace(config, budget=10, eval_every=1000), "recall", "LSTM", "lstm", 1.0, 16, (5,), seed=0)
    (result,), _ = train_job(late)
    assert result.steps in (10, 20, None)  # scored at 10 and 20 though eval_every is 1000
    assert result.accuracy_at_budget != result.accuracy or result.steps == 10


def test_quick_experiment_in_one_process_measures_gradients_and_forget_gates():
    config = ExperimentConfig.quick(tasks=("recall",), seeds=1, jobs=1)
    report = run_experiment(config)
    assert {(r.model, r.distance) for r in report.results} == {
        (m, d) for m, _, _ in config.variants() for d in (5, 20)
    }
    # every cell solves d = 5; gradients are measured on the models that learnt
    for model, gradients in report.gradients.items():
        assert gradients["trained_at"] == report.longest_solved("recall", model) >= 5, model
        ks = [k for k, _ in gradients["norms"]]
        assert ks[0] == 0 and ks[-2:] == [20 + 1, 20 + 2]  # the state after the symbol, and before it
    gates = report.forget_gates
    assert gates["model"].startswith("LSTM") and len(gates["units"]) == 3
    assert gates["eta_squared"][0] > 0.5  # a model that remembers keeps the symbol in a few units
    assert len(gates["forget_by_step"][0]) == gates["distance"] + 2
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["results"][0]["model"] == "LSTM" and as_json["config"]["seeds"] == 1


@pytest.mark.slow
def test_parallel_workers_give_the_same_results_as_one_process():
    config = ExperimentConfig.quick(tasks=("copy",), seeds=1, forget_biases=(3.0,))
    one = run_experiment(replace(config, jobs=1))
    two = run_experiment(replace(config, jobs=2))
    assert [(r.model, r.steps, r.accuracy) for r in one.results] == [
        (r.model, r.steps, r.accuracy) for r in two.results
    ]
    assert one.gradients == {} and one.forget_gates == {}  # measured on recall only


def test_every_cell_trains_on_the_same_batches_and_seeds_differ():
    jobs = {(j.model, j.distances, j.seed): j for j in plan(ExperimentConfig(), "cpu") if j.task == "copy"}

    def first_batch(model, distance=30, seed=0):
        return MemoryTask("copy").batch(distance, 8, data_generator(jobs[(model, (distance,), seed)]))[0]

    assert all(
        first_batch(model).equal(first_batch("LSTM")) for model in ("LSTM, forget bias 3", "GRU", "RNN")
    )
    assert not first_batch("LSTM", seed=1).equal(first_batch("LSTM"))
