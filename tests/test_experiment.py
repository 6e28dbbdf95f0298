import json

from charlstm.experiment import ExperimentConfig, run_long_range


def test_quick_long_range_run():
    config = ExperimentConfig.quick()
    report = run_long_range(config)
    labels = [label for label, _, _ in config.variants()]
    assert labels == ["LSTM", "LSTM, forget bias 3", "GRU", "RNN"]
    assert {(r.model, r.distance) for r in report.results} == {(m, d) for m in labels for d in (10, 30)}
    sizes = [r.parameters for r in report.results]
    assert max(sizes) / min(sizes) < 1.05  # equal parameter budgets
    # Accuracy is a share of the 128 held-out sequences; at d = 10 the open-gated LSTM is well
    # above chance (1/8) after 60 steps (seeded: 80%).
    held_out = config.eval_sequences
    assert all(r.accuracy * held_out == round(r.accuracy * held_out) for r in report.results)
    assert report.accuracy("LSTM, forget bias 3", 10) >= 0.5, report.results
    # The vanishing gradient, measured: a tanh RNN's gradient at the sequence start is orders of
    # magnitude below its gradient at the query; an LSTM whose forget gates start open keeps it.
    rnn = dict(report.gradient_norms["RNN"])
    open_lstm = dict(report.gradient_norms["LSTM, forget bias 3"])
    start = max(rnn)
    assert start == 31 + 1 and rnn[start] < 1e-6 * rnn[0]
    assert open_lstm[start] > 1e3 * rnn[start]
    assert json.loads(json.dumps(report.to_dict()))["results"][0]["model"] == "LSTM"
