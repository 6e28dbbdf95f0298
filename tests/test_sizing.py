import json

import pytest
import torch

from charlstm.config import ModelConfig, ModelShape, TrainConfig
from charlstm.hardware import FP32
from charlstm.model import LanguageModel, count_parameters
from charlstm.training.sizing import (
    LADDER,
    TOKENS_PER_PARAMETER,
    SMALL_TEXT_PATIENCE,
    choose_size,
    dropout_for,
    measure_speed,
    pick,
    small_text_recipe,
)
from charlstm.data.text import TextSource
from charlstm.training.trainer import train


@pytest.mark.parametrize("layers, units, embedding, vocab", [(1, 512, 64, 66), (2, 256, 64, 66), (1, 128, 16, 300)])
def test_count_parameters_counts_what_the_model_has(layers, units, embedding, vocab):
    config = ModelConfig(vocab_size=vocab, embedding_dim=embedding, hidden_size=units, num_layers=layers)
    assert count_parameters(config) == LanguageModel(config).num_parameters()


def test_dropout_rises_with_the_passes_over_the_text():
    assert [dropout_for(e) for e in (0, 2, 6, 12, 30)] == [0.1, 0.12, 0.17, 0.24, 0.4]
    assert [dropout_for(e, "ln-lstm") for e in (0, 3.3, 6, 8.7, 30)] == [0.15, 0.25, 0.33, 0.4, 0.4]


def test_pick_takes_the_largest_shape_the_budget_and_text_allow():
    speeds = {(1, 256): 50_000.0, (1, 512): 25_000.0, (1, 768): 12_500.0}
    n512 = count_parameters(ModelConfig(vocab_size=66, embedding_dim=64, hidden_size=512, num_layers=1))
    # 300 s: 7.5M tokens for 1x512 (6.1 per parameter) but 1.4 per parameter for 1x768.
    assert pick(300, speeds, 1_000_000, 64, 66) == (1, 512)
    assert pick(60, speeds, 1_000_000, 64, 66) == (1, 256)
    assert pick(3600, speeds, 1_000_000, 64, 66) == (1, 768)
    # A text too small for the model's parameters caps it, whatever the budget.
    assert pick(3600, speeds, n512 // 3 - 1, 64, 66) == (1, 256)
    # A small text stops early (small_text_recipe) instead: only the budget caps its model.
    assert pick(300, speeds, 27_000, 64, 66) == (1, 512)
    assert pick(300, speeds, 300_000, 64, 66) == (1, 256)  # 300,000 tokens: capped again
    # Nothing fits: the smallest.
    assert pick(1, speeds, 1_000_000, 64, 66) == (1, 256)
    assert speeds[(1, 512)] * 300 >= TOKENS_PER_PARAMETER * n512


def test_measure_speed_leaves_the_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    config = ModelConfig(vocab_size=20, embedding_dim=8, hidden_size=16, num_layers=1)
    speed = measure_speed(config, 4, 8, torch.device("cpu"), FP32)
    assert 100 < speed < 1e9  # tokens/s of a 16-unit model: finite and plausible even on a loaded CPU
    assert torch.equal(torch.rand(3), expected)


def test_choose_size_times_shapes_smallest_first_and_stops_at_the_first_too_big(monkeypatch):
    timed = []

    def fake_speed(config, batch_size, bptt, device, precision, steps=2):
        timed.append((config.num_layers, config.hidden_size))
        return 5e6 / config.hidden_size**2 * 1000  # 1x256: 76k tokens/s, 1x512: 19k, ...

    monkeypatch.setattr("charlstm.training.sizing.measure_speed", fake_speed)
    config = TrainConfig(max_time=300)
    choice = choose_size(ModelShape(), config, 66, 1_000_000, torch.device("cpu"), FP32)
    assert timed == list(LADDER[: len(timed)]) and timed[-1] == (1, 768)  # 1x768: too big, no further
    assert (choice.shape.num_layers, choice.shape.hidden_size) == (1, 512)
    assert choice.epochs == pytest.approx(choice.tokens_per_s * 300 / 1_000_000)
    assert choice.shape.dropout == dropout_for(choice.epochs)
    assert "tokens/s" in choice.reason and set(choice.measured) == {"1x128", "1x256", "1x384", "1x512", "1x768"}
    kept = choose_size(ModelShape(dropout=0.05), config, 66, 1_000_000, torch.device("cpu"), FP32, keep_dropout=True)
    assert kept.shape.dropout == 0.05


def test_a_run_with_max_time_is_sized_and_records_why(tmp_path, small_text, monkeypatch):
    monkeypatch.setattr("charlstm.training.sizing.measure_speed", lambda config, *a, **k: 1e9 / config.hidden_size**2)
    source = TextSource.from_text(small_text, "small", "small")
    config = TrainConfig(batch_size=4, bptt=16, device="cpu", seed=1, max_time=1, max_steps=2)
    result = train(source, config, ModelShape(), out=tmp_path / "auto", shape_given=())
    record = json.loads((result.run_dir / "config.json").read_text())
    size = record["info"]["size"]
    assert record["model"]["hidden_size"] == int(size["shape"].split("x")[1])
    assert record["model"]["dropout"] == size["dropout"] and "per parameter" in size["reason"]
    # Given shape options are kept; without shape_given (a library call) the shape is as passed.
    kept = train(source, config, ModelShape(hidden_size=8), out=tmp_path / "kept", shape_given=("hidden_size",))
    record = json.loads((kept.run_dir / "config.json").read_text())
    assert record["model"]["hidden_size"] == 8 and record["info"]["size"] == {"reason": "the shape options given are kept"}
    # A cell given is sized: its shapes are timed as that cell.
    timed = []
    monkeypatch.setattr(
        "charlstm.training.sizing.measure_speed", lambda config, *a, **k: timed.append(config.cell) or 1e9 / config.hidden_size**2
    )
    cell = train(source, config, ModelShape(cell="gru"), out=tmp_path / "cell", shape_given=("cell",))
    record = json.loads((cell.run_dir / "config.json").read_text())
    assert record["model"]["cell"] == "gru" and set(timed) == {"gru"} and "per parameter" in record["info"]["size"]["reason"]
    plain = train(source, config, ModelShape(hidden_size=8), out=tmp_path / "plain")
    assert "size" not in json.loads((plain.run_dir / "config.json").read_text())["info"]
    fixed = train(source, TrainConfig(**{**config.to_dict(), "size": "fixed"}), ModelShape(), out=tmp_path / "fixed",
                  shape_given=())
    record = json.loads((fixed.run_dir / "config.json").read_text())
    assert record["model"]["hidden_size"] == ModelShape().hidden_size and "size" not in record["info"]


def test_a_small_text_trains_for_the_budget_with_early_stopping():
    config = TrainConfig(max_time=60)  # no --epochs: the budget ends the run
    assert config.epoch_limit is None and TrainConfig().epoch_limit == 10 and TrainConfig(max_time=60, epochs=3).epoch_limit == 3
    # 27,000 tokens, 200 passes in the budget: validating every pass, stopping early.
    assert small_text_recipe(200.4, 27_000, 27, config) == {"eval_every": 27, "patience": 3, "ema": 0.99}
    assert SMALL_TEXT_PATIENCE == 3
    # What the user gave is kept.
    assert small_text_recipe(200.4, 27_000, 27, config, ("patience", "epochs", "ema")) == {"eval_every": 27}
    # A large text, or a small one the budget passes over at most --epochs times: unchanged.
    assert small_text_recipe(13.0, 1_000_000, 980, config) == {}
    assert small_text_recipe(9.5, 27_000, 27, config) == {}
    assert small_text_recipe(200.0, 27_000, 27, TrainConfig(max_time=60, epochs=300)) == {}


def test_a_small_text_run_with_max_time_gets_the_recipe_and_a_large_one_does_not(tmp_path, small_text, monkeypatch):
    # 1x512: 381,000 tokens/s, 11.4M tokens in 30 s (9 per parameter); 1x768: under 4 per parameter.
    monkeypatch.setattr("charlstm.training.sizing.measure_speed", lambda config, *a, **k: 1e11 / config.hidden_size**2)
    source = TextSource.from_text(small_text[:6000], "small", "small")  # 5,400 training tokens
    config = TrainConfig(batch_size=4, bptt=16, device="cpu", seed=1, max_time=30, max_steps=3)
    result = train(source, config, ModelShape(), out=tmp_path / "auto", shape_given=())
    record = json.loads((result.run_dir / "config.json").read_text())
    size, train_config = record["info"]["size"], record["train"]
    steps_per_epoch = record["info"]["steps_per_epoch"]
    assert size["recipe"] == {"eval_every": steps_per_epoch, "patience": 3, "ema": 0.99}
    assert (train_config["epochs"], train_config["eval_every"], train_config["patience"], train_config["ema"]) == (
        None, steps_per_epoch, 3, 0.99
    )  # no --epochs: the budget ends the run
    assert size["shape"] == "1x512"  # 230 parameters per token: no cap for a small text, only the budget
    assert size["dropout"] == 0.4 and "a small text: validating every" in size["reason"]
    # A given --patience is kept; the rest of the recipe still applies.
    given = train(source, TrainConfig(**{**config.to_dict(), "patience": 7}), ModelShape(), out=tmp_path / "given",
                  shape_given=("patience",))
    assert json.loads((given.run_dir / "config.json").read_text())["train"]["patience"] == 7
    # Large texts are sized as before: the recipe is left alone.
    assert small_text_recipe(size["epochs"], 1_000_000, steps_per_epoch, config) == {}


@pytest.mark.slow
def test_bench_quality_short_mode_runs_both_recipes_and_dynamic_evaluation(tmp_path):
    """benchmarks/bench_quality.py --short: the budget sweep and the dynamic-evaluation comparison
    run end to end through the real CLI (2-second runs on part of the built-in corpus)."""
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "quality.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_quality.py"
    done = subprocess.run(
        [sys.executable, str(script), "--short", "--adapt", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert [r["recipe"] for r in results] == ["auto", "fixed"]
    auto, fixed = results
    assert "per parameter" in auto["size"]["reason"] and fixed["size"] is None
    assert fixed["shape"] == f"{ModelShape().num_layers}x{ModelShape().hidden_size}"
    for r in results:
        assert r["eval_chars"] == 20_000 and r["adapt_seconds"] > 0
        assert 0 < r["adapted_nats_per_char"] < 6 and 0 < r["eval_nats_per_char"] < 6
    assert "held-out last tenth" in done.stdout


@pytest.mark.auto_cell
@pytest.mark.parametrize("built", [True, False])
def test_auto_sizes_the_ln_lstm_where_its_recurrence_builds_and_a_cell_given_is_kept(tmp_path, small_text, monkeypatch, built):
    from charlstm.lnlstm import kernel

    monkeypatch.setattr(kernel, "status", lambda: kernel.KernelStatus(built, "" if built else "no compiler"))
    timed = []
    monkeypatch.setattr(
        "charlstm.training.sizing.measure_speed", lambda config, *a, **k: timed.append(config.cell) or 1e9 / config.hidden_size**2
    )
    source = TextSource.from_text(small_text, "small", "small")
    config = TrainConfig(batch_size=4, bptt=16, device="cpu", seed=1, max_time=1, max_steps=2)
    result = train(source, config, ModelShape(), out=tmp_path / "auto", shape_given=())
    record = json.loads((result.run_dir / "config.json").read_text())
    cell = "ln-lstm" if built else "lstm"
    assert record["model"]["cell"] == record["info"]["size"]["cell"] == cell and set(timed) == {cell}
    given = train(source, config, ModelShape(cell="gru"), out=tmp_path / "given", shape_given=("cell",))
    assert json.loads((given.run_dir / "config.json").read_text())["model"]["cell"] == "gru"
