import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charlstm.runs.checkpoint import load_checkpoint
from charlstm.cli import cli
from charlstm.data.text import file_sha256

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"})  # no wrapped lines


def test_fine_tuning_starts_from_the_model_and_names_new_characters(tiny_run, tmp_path, small_text):
    new = tmp_path / "new.txt"
    new.write_text(small_text[5000:9000] + "Café ☃ naïve\n" * 3)
    run = tmp_path / "tuned"
    result = invoke("train", new, "--init-from", tiny_run, "--out", run, "--batch-size", "4", "--bptt", "16", "--max-steps", "2")
    assert result.exit_code == 0, result.output
    source = load_checkpoint(tiny_run)
    step = source["train_state"]["step"]
    assert f"starting from {tiny_run / 'best.pt'} (step {step}): its weights and tokenizer" in result.stderr
    assert (
        "note: 3 characters ('é', 'ï', '☃') of the text are not in the model's vocabulary: they are trained "
        "as the unknown symbol (9 places). --strict-vocab refuses such a text; for a text in new scripts, "
        "train a new model with --tokenizer byte or --tokenizer bpe\n"
    ) in result.stderr
    record = {"path": str((tiny_run / "best.pt").resolve()), "sha256": file_sha256(tiny_run / "best.pt"), "step": step}
    assert json.loads((run / "config.json").read_text())["init_from"] == record
    tuned = load_checkpoint(run / "last.pt")
    assert tuned["init_from"] == record
    assert tuned["tokenizer"] == source["tokenizer"]  # never a rebuilt vocabulary
    assert tuned["model_config"] == source["model_config"]
    assert tuned["train_state"]["step"] == 2  # a new run: its own steps, a fresh optimizer
    assert all(s["step"] == 2 for s in tuned["optimizer"]["state"].values())


def test_strict_vocab_and_conflicting_shape_are_refused(tiny_run, tmp_path, small_text):
    new = tmp_path / "new.txt"
    new.write_text(small_text[:3000] + "☃\n")
    strict = invoke("train", new, "--init-from", tiny_run, "--strict-vocab", "--out", tmp_path / "a")
    assert strict.exit_code == 1 and not (tmp_path / "a").exists()
    assert strict.stderr == (
        f"Error: {new}: 1 character ('☃') of the text are not in the vocabulary of {tiny_run / 'best.pt'}, "
        "and --strict-vocab refuses them; leave out --strict-vocab to train them as the unknown symbol, or "
        "for a text in new scripts train a new model with --tokenizer byte or --tokenizer bpe\n"
    )
    shape = invoke("train", new, "--init-from", tiny_run, "--hidden-size", "64", "--cell", "gru", "--num-layers", "1")
    assert shape.exit_code == 2
    assert shape.stderr == (
        f"Error: --init-from {tiny_run}: the model's shape and tokens come from it, and these settings "
        "differ: --hidden-size 64 (the model has 32); --cell 'gru' (the model has 'lstm'). Leave them out, "
        "or train a new model without --init-from\n"
    )


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch_quick(tmp_path):
    """benchmarks/bench_finetune.py --quick: on a second text, the fine-tuned model's held-out loss is
    below the from-scratch model's at the same number of steps."""
    out = tmp_path / "quick.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_finetune.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    assert results["finetune"]["loss"] < results["scratch"]["loss"] - 0.2
