"""The public Python API (``charlstm.api``): every call's return types and values, and the same
results as the command line built on it."""

import json
import math
import subprocess
import sys

import pytest
import torch

import charlstm
from charlstm.config import ModelConfig
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def lm(tiny_run):
    return charlstm.load(tiny_run, device="cpu")


def _same(a, b) -> bool:
    """Equal, with nan equal to nan (an empty line's bits per character)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


# ----------------------------------------------------------------------------------- importing


def test_import_charlstm_does_not_import_torch():
    code = (
        "import sys, charlstm\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'load' in dir(charlstm) and 'CharlstmError' in charlstm.__all__\n"
        "assert issubclass(charlstm.ConfigError, charlstm.CharlstmError)\n"
        "assert 'torch' not in sys.modules, 'torch imported by the errors'\n"
        "charlstm.load\n"
        "assert 'torch' in sys.modules and 'charlstm.api' in sys.modules\n"
        "print(charlstm.__version__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == charlstm.__version__


def test_the_package_names_its_api():
    import charlstm.api

    # charlstm's lazy list names every public call of charlstm.api (text_source is the CLI's seam)
    for name in set(charlstm.api.__all__) - {"text_source"}:
        assert name in charlstm.__all__ and getattr(charlstm, name) is getattr(charlstm.api, name)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        charlstm.nope  # noqa: B018


# ------------------------------------------------------------------------------------ the handle


def test_load_describes_the_model(lm, tiny_run):
    assert isinstance(lm, charlstm.Model)
    assert isinstance(lm.module, torch.nn.Module) and not lm.module.training  # ready to write and measure: dropout off
    assert isinstance(lm.config, ModelConfig) and (lm.config.hidden_size, lm.config.embedding_dim) == (32, 16)
    assert lm.device == torch.device("cpu") and lm.path == tiny_run
    info = lm.info
    assert info.parameters == sum(p.numel() for p in lm.module.parameters())
    assert (info.tokenizer, info.vocab_size) == ("char", lm.tokenizer.vocab_size) == ("char", lm.config.vocab_size)
    assert info.step == 20 and info.trained_on == "small"
    assert info.best_val_loss == pytest.approx(charlstm.read_run(tiny_run).best_val_loss)
    assert "lstm 1x32" in repr(lm)


def test_load_refuses_what_the_cli_refuses(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(charlstm.CheckpointError) as error:
        charlstm.load(missing)
    cli = run_cli("sample", missing)
    assert cli.returncode == 1 and cli.stderr == f"Error: {error.value}\n"
    assert str(error.value) == f"{missing}: no such checkpoint file or run directory"
    with pytest.raises(charlstm.ConfigError, match="--device must be one of auto, cpu, cuda, mps"):
        charlstm.load(missing, device="gpu")


# ---------------------------------------------------------------------------------- generating


def test_generate_gives_what_sample_writes(lm, tiny_run):
    text = lm.generate("The ", length=40, seed=5)
    assert isinstance(text, str) and len(text) == 40 and not text.startswith("The ") or text[:4] != "The "
    cli = run_cli("sample", tiny_run, "--prime", "The ", "--length", "40", "--seed", "5", "--device", "cpu")
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == "The " + text + "\n"
    again = lm.generate("The ", length=40, seed=5, temperature=0.8)
    assert again == text  # the same seed and settings repeat
    assert lm.generate("The ", length=40, seed=6) != text


def test_generate_several_samples_and_settings_like_sample(lm, tiny_run):
    texts = lm.generate("a", length=25, seed=2, num_samples=3, top_k=5, temperature=1.2, stop="\n\n")
    assert isinstance(texts, list) and len(texts) == 3 and len(set(texts)) == 3
    cli = run_cli(
        "sample", tiny_run, "--prime", "a", "--length", "25", "--seed", "2", "--num-samples", "3", "--top-k", "5",
        "--temperature", "1.2", "--stop", "\n\n", "--device", "cpu",
    )
    assert cli.stdout == "\n\n".join("a" + t for t in texts) + "\n"
    beam = lm.generate("The ", length=12, beam_width=3)
    cli = run_cli("sample", tiny_run, "--prime", "The ", "--length", "12", "--beam-width", "3", "--device", "cpu")
    assert cli.stdout == "The " + beam + "\n"


def test_generate_details_are_sample_json_records(lm, tiny_run):
    completion = lm.generate("The ", length=30, seed=4, details=True)
    assert isinstance(completion, charlstm.Completion)
    assert (completion.prime, completion.seed, completion.temperature, completion.tokens) == ("The ", 4, 0.8, 30)
    assert completion.text == lm.generate("The ", length=30, seed=4)
    assert -10 < completion.mean_logprob < 0
    cli = run_cli("sample", tiny_run, "--prime", "The ", "--length", "30", "--seed", "4", "--json", "--device", "cpu")
    assert json.loads(cli.stdout) == completion.to_dict()
    several = lm.generate(length=10, num_samples=2, details=True)
    assert [type(c) for c in several] == [charlstm.Completion] * 2
    assert several[0].seed == several[1].seed and several[0].settings["num_samples"] == 2
    drawn = lm.generate(length=5, details=True).seed  # no seed given: one is drawn and recorded
    assert lm.generate(length=5, seed=drawn) == lm.generate(length=5, seed=drawn)


def test_stream_pieces_join_to_generates_text(lm):
    pieces = list(lm.stream("The ", length=60, seed=9, top_p=0.9))
    assert len(pieces) > 1 and all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == lm.generate("The ", length=60, seed=9, top_p=0.9)
    assert "".join(lm.stream("The ", length=8, beam_width=2)) == lm.generate("The ", length=8, beam_width=2)


def test_bad_settings_are_the_clis_config_errors(lm, tiny_run):
    with pytest.raises(charlstm.ConfigError) as error:
        lm.generate("x", temperature=-1)
    assert str(error.value) == "--temperature must be 0 (greedy) or more (got -1)"
    cli = run_cli("sample", tiny_run, "--temperature", "-1")
    assert cli.returncode == 2 and "--temperature must be 0 (greedy) or more (got -1.0)" in cli.stderr
    with pytest.raises(charlstm.ConfigError, match="--top-k must be at least 1 .*; --num-samples must be at least 1"):
        lm.generate(top_k=0, num_samples=0)
    with pytest.raises(charlstm.ConfigError, match="--prime has characters the model's vocabulary lacks: '☃'"):
        lm.stream("☃")  # checked when called, not when read
    with pytest.raises(TypeError):
        lm.generate("x", 40)  # settings are keyword-only


def test_a_session_keeps_its_state_between_replies(lm, tiny_run):
    chat = lm.session(seed=3, length=30)
    first, second = chat.reply("Hello"), chat.reply("Hello")
    assert isinstance(first, str) and len(first) == len(second) == 30
    # Turn seeds count from --seed: a fresh session seeded 4 writes its first reply with the seed
    # of the second turn, but without the text before it.
    fresh = lm.session(seed=4, length=30)
    assert fresh.reply("Hello") != second
    chat.reset()
    assert chat.reply("Hello") == first and "".join(chat.stream("Hello")) == second
    cli = run_cli("chat", tiny_run, "--seed", "3", "--length", "30", "--device", "cpu", input="Hello\nHello\n")
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == f"{first}\n{second}\n"
    assert chat.settings["seed"] == 3 and chat.settings["length"] == 30
    chat.set("top-k", "5")
    assert chat.settings["top-k"] == 5
    with pytest.raises(charlstm.ConfigError, match="/warmth: not a setting"):
        chat.set("warmth", "1")
    top = chat.top_next(3)
    assert len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]


# ----------------------------------------------------------------------------------- measuring


def test_score_gives_scores_jsons_records(lm, tiny_run, tmp_path):
    lines = ["the statement of the case", "", "zqxj vvkw"]
    scores = lm.score(lines)
    assert [s.text for s in scores] == lines and scores[1].tokens == 0 and math.isnan(scores[1].bits_per_char)
    assert scores[0].bits_per_char < scores[2].bits_per_char
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")
    cli = run_cli("score", tiny_run, "--file", source, "--json", "--device", "cpu")
    records = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(records) == 3 and all(_same(r, s.to_dict()) for r, s in zip(records, scores))
    assert all(_same(a.to_dict(), b.to_dict()) for a, b in zip(lm.score(file=source), scores))
    assert [s.text for s in lm.score("one\r\ntwo\n")] == ["one", "two"]


def test_evaluate_gives_evals_report(lm, tiny_run, text_file):
    report = lm.evaluate(text_file)
    cli = run_cli("eval", tiny_run, text_file, "--json", "--device", "cpu")
    record = json.loads(cli.stdout)
    assert {k: v for k, v in record.items() if k != "seconds"} == {
        k: v for k, v in report.to_dict().items() if k != "seconds"
    }
    same = lm.evaluate(text=text_file.read_text())
    assert (same.tokens, same.loss) == (report.tokens, pytest.approx(report.loss))
    with pytest.raises(charlstm.ConfigError, match="--batch-size must be at least 1"):
        lm.evaluate(text_file, batch_size=0)
    with pytest.raises(charlstm.ConfigError) as error:
        lm.evaluate(text_file, adapt_lr=0.1)
    assert str(error.value) == (
        "--adapt-method, --adapt-lr, --adapt-decay, --adapt-tune, --adapt-prior, --adapt-bptt and --adapt-depth need --adapt"
    )
    with pytest.raises(charlstm.DataError, match="no such file"):
        lm.evaluate(text_file.parent / "nope.txt")


def test_evaluate_adapt_as_eval_adapt_and_puts_the_weights_back(lm, tiny_run, tmp_path, small_text):
    short = tmp_path / "short.txt"
    short.write_text(small_text[:1500])
    report = lm.evaluate(short, adapt=True, adapt_lr=0.05, adapt_bptt=32)
    cli = json.loads(run_cli("eval", tiny_run, short, "--json", "--adapt", "--adapt-lr", "0.05", "--adapt-bptt", "32").stdout)
    assert report.adapted is not None and report.adapted.loss == pytest.approx(cli["adapted"]["loss"])
    assert (report.adapted.adapt_lr, report.adapted.adapt_bptt) == (0.05, 32)
    assert lm.evaluate(short).loss == pytest.approx(report.loss)  # the trained weights are back


def test_inspect_gives_what_inspect_shows(lm, tiny_run):
    text = 'He said "yes" (twice). And then he said it again.'
    report = lm.inspect(text, at=3)
    assert type(report).__name__ == "Inspection" and report.units
    cli = run_cli("inspect", tiny_run, "--text", text, "--at", "3")
    assert cli.returncode == 0, cli.stderr
    assert all(unit.label in cli.stdout for unit in report.units)
    with pytest.raises(charlstm.ConfigError) as error:
        lm.inspect(text, layer=2)
    assert str(error.value) == "--layer 2: the model has 1 layer"
    assert run_cli("inspect", tiny_run, "--text", text, "--layer", "2").stderr == f"Error: {error.value}\n"


# ------------------------------------------------------------------------------------- training


def test_train_resume_and_read_run(tmp_path, text_file, capfd):
    out = tmp_path / "run"
    tiny = dict(hidden_size=16, embedding_dim=8, batch_size=4, bptt=16, eval_every=2, device="cpu")
    result = charlstm.train(text_file, out=out, max_steps=4, progress=False, **tiny)
    assert capfd.readouterr() == ("", "")  # progress=False: nothing at all
    assert result.run_dir == out and result.steps == 4 and result.stop_reason == "max_steps"
    assert [m["step"] for m in result.metrics] == [2, 4]
    assert result.best_val_loss == min(m["val_loss"] for m in result.metrics) and math.isfinite(result.best_val_loss)
    assert result.best_path == out / "best.pt" and result.best_path.is_file()
    assert charlstm.load(out).config.hidden_size == 16

    resumed = charlstm.resume(out, max_steps=6, progress=True)
    printed = capfd.readouterr()
    assert printed.out == "" and "step" in printed.err  # the bar, on stderr
    assert resumed.run_dir == out and resumed.steps == 6 and [m["step"] for m in resumed.metrics] == [2, 4, 6]

    summary = charlstm.read_run(out)
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert [summary.to_dict()] == info
    assert summary.steps == 6 and summary.status == "finished: max_steps" and len(summary.metrics) == 3


def test_train_refuses_bad_settings_as_the_cli_does(tmp_path, text_file):
    with pytest.raises(charlstm.ConfigError) as error:
        charlstm.train(text_file, out=tmp_path / "a", hidden_size=0, lr=-1)
    assert str(error.value) == "--lr must be a positive number (got -1)"
    with pytest.raises(charlstm.ConfigError, match="--hidden-size must be at least 1"):
        charlstm.train(text_file, out=tmp_path / "a", hidden_size=0)
    with pytest.raises(charlstm.ConfigError, match="--hidden-sise: not a setting of train"):
        charlstm.train(text_file, out=tmp_path / "a", hidden_sise=16)
    with pytest.raises(charlstm.ConfigError, match="--size auto needs --max-time"):
        charlstm.train(text_file, out=tmp_path / "a", size="auto")
    with pytest.raises(charlstm.DataError, match="no such file"):
        charlstm.train(tmp_path / "nope.txt", out=tmp_path / "a", max_steps=1)
    with pytest.raises(charlstm.RunDirectoryError):
        charlstm.read_run(tmp_path / "nope")
    assert not (tmp_path / "a").exists()


def test_lighter_weights_from_load_and_per_call(tiny_run, text_file):
    """``load(weights=...)`` sets how generation and scoring hold the recurrent weights; a call's
    own ``weights=`` overrides it; int8 stays close to fp32 and dynamic evaluation needs fp32."""
    fp32 = charlstm.load(tiny_run, device="cpu")
    int8 = charlstm.load(tiny_run, device="cpu", weights="int8")
    assert int8.weights == "int8" and fp32.weights is None  # None: each call's own default
    assert fp32.generate("the ", length=5, seed=3, details=True).settings["weights"] == "fp32"
    text = int8.generate("the ", length=40, seed=3, details=True)
    assert text.settings["weights"] == "int8" and text.tokens == 40
    assert int8.generate("the ", length=40, seed=3, weights="fp32") == fp32.generate("the ", length=40, seed=3)
    lines = ["the cat sat", "on the mat"]
    for a, b in zip(fp32.score(lines), int8.score(lines)):
        assert a.tokens == b.tokens and abs(a.logprob - b.logprob) < 0.05 * abs(a.logprob)
    static = fp32.evaluate(text_file).loss
    assert abs(int8.evaluate(text_file).loss - static) < 0.01
    assert abs(fp32.evaluate(text_file, weights="bf16").loss - static) < 0.01
    with pytest.raises(charlstm.ConfigError, match=r"^--adapt learns in fp32: give --weights fp32 with --adapt$"):
        int8.evaluate(text_file, adapt=True)
    with pytest.raises(charlstm.ConfigError, match=r"--weights"):
        charlstm.load(tiny_run, weights="int4")
