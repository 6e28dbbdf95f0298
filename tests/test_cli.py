import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from charlstm.cli import cli
from tests.conftest import TINY_MODEL, run_cli, run_process


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# In this process (Click's CliRunner), answered as subprocess.run answers. The tests about the
# real process (signals, pipes, resource limits) and one end-to-end test per command call
# ``run_process`` instead.
charlstm = run_cli


def test_end_to_end_train_sample_eval(tmp_path, text_file):
    run_dir = tmp_path / "run"
    train = run_process(
        "train", text_file, "--out", run_dir, *TINY_MODEL, "--max-steps", "6", "--eval-every", "3"
    )
    assert train.returncode == 0, train.stderr
    assert train.stdout == ""  # progress and the summary go to stderr
    assert "best validation loss" in train.stderr
    assert {"best.pt", "last.pt", "config.json", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}

    sample = run_process("sample", run_dir, "--prime", "The ", "--length", "50", "--seed", "1")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("The ") and len(sample.stdout) == len("The ") + 50 + 1

    evaluated = run_process("eval", run_dir, text_file, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert list(report) == [
        "tokens",
        "chars",
        "bytes",
        "loss",
        "perplexity",
        "bits_per_char",
        "bits_per_byte",
        "unknown",
        "replacements",
        "seconds",
        "adapted",
        "cached",
        "context_tokens",
    ]
    assert report["adapted"] is None and report["cached"] is None  # without --adapt, --cache-size
    assert report["context_tokens"] == 0  # without --context
    assert report["chars"] == len(text_file.read_text())
    assert 0 < report["loss"] < 6 and report["unknown"] == 0


def test_builtin_corpus_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", *TINY_MODEL, "--max-steps", "2")
    assert result.exit_code == 0, result.output
    assert "built-in corpus" in result.stderr and "Python Language Reference" in result.stderr
    assert (tmp_path / "checkpoints" / "python-reference" / "best.pt").is_file()


@pytest.mark.parametrize("tokenizer", ["byte", "bpe", "unigram"])
def test_other_tokenizers_train_sample_eval(tmp_path, text_file, tokenizer):
    run_dir = tmp_path / tokenizer
    extra = ["--vocab-size", "400"] if tokenizer in ("bpe", "unigram") else []
    result = invoke(
        "train",
        text_file,
        "--out",
        run_dir,
        "--tokenizer",
        tokenizer,
        *extra,
        *TINY_MODEL,
        "--max-steps",
        "3",
    )
    assert result.exit_code == 0, result.output
    result = invoke("sample", run_dir, "--length", "30", "--seed", "0", "--no-echo-prime")
    assert result.exit_code == 0 and len(result.stdout) == 31
    result = invoke("eval", run_dir, text_file, "--json")
    report = json.loads(result.stdout)
    assert report["bytes"] == len(text_file.read_bytes()) and report["unknown"] == 0
    assert report["bits_per_byte"] == pytest.approx(report["loss"] * report["tokens"] / math.log(2) / report["bytes"])


def test_eval_counts_unknown_characters(tiny_run, tmp_path):
    odd = tmp_path / "odd.txt"
    odd.write_text("The ☃ snowman ☃ melts.\n")
    report = json.loads(invoke("eval", tiny_run, odd, "--json").stdout)
    assert report["unknown"] == 2


def test_eval_table_and_sample_options(tiny_run, text_file):
    table = invoke("eval", tiny_run, text_file)
    assert table.exit_code == 0 and "bits per character" in table.stdout
    stopped = invoke("sample", tiny_run, "--prime", "a", "--length", "500", "--stop", "e", "--seed", "2")
    assert stopped.exit_code == 0 and "e" not in stopped.stdout[1:]
    several = invoke(
        "sample", tiny_run, "--num-samples", "3", "--length", "20", "--top-k", "1000", "--top-p", "0.9"
    )
    assert several.exit_code == 0 and several.stdout.count("\n\n") >= 2


def _dir(tmp_path, name):
    (tmp_path / name).mkdir()
    return tmp_path / name


def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path


BAD_INPUTS = {
    "missing file": (lambda p: ["train", p / "missing.txt"], 1, "no such file"),
    "directory": (lambda p: ["train", p], 1, "is a directory"),
    "empty": (lambda p: ["train", _bad(p, "e.txt", b"")], 1, "empty"),
    "whitespace": (lambda p: ["train", _bad(p, "w.txt", b" \n\n ")], 1, "only whitespace"),
    "not utf-8": (lambda p: ["train", _bad(p, "l.txt", "caf\xe9".encode("latin-1"))], 1, "byte offset 3"),
    "nul bytes": (lambda p: ["train", _bad(p, "n.txt", b"a\x00b")], 1, "looks binary"),
    "utf-16": (lambda p: ["train", _bad(p, "u.txt", "hello".encode("utf-16"))], 1, "UTF-16"),
    "too short": (lambda p: ["train", _bad(p, "s.txt", b"tiny text\n")], 1, "needs at least 1040 tokens"),
    "vocab too large": (
        lambda p: [
            "train",
            _bad(p, "v.txt", b"one two three four five\n" * 300),
            "--tokenizer",
            "unigram",
            "--vocab-size",
            "60000",
            "--batch-size",
            "2",
            "--bptt",
            "8",
        ],
        1,
        "the largest that works is",
    ),
    "ema of 1": (lambda p: ["train", p / "missing.txt", "--ema", "1"], 2, "--ema must be in (0, 1) (got 1.0)"),
    "ema negative": (lambda p: ["train", p / "missing.txt", "--ema", "-0.5"], 2, "--ema must be in (0, 1) (got -0.5)"),
    "resume missing": (lambda p: ["train", "--resume", p / "nope"], 1, "no such run directory"),
    "resume empty": (lambda p: ["train", "--resume", _dir(p, "empty")], 1, "nothing to resume"),
    "resume with --out": (lambda p: ["train", "--resume", p, "--out", p / "o"], 2, "--out cannot be used"),
    "checkpoint missing": (lambda p: ["sample", p / "nope"], 1, "no such checkpoint"),
    "not a checkpoint": (
        lambda p: ["sample", _bad(p, "x.pt", b"PK\x03\x04junk")],
        1,
        "not a charlstm checkpoint",
    ),
    "negative length": (lambda p: ["sample", p / "nope", "--length", "-5"], 2, "--length must be 0 or more"),
    "top-p out of range": (
        lambda p: ["sample", p / "nope", "--top-p", "1.5"],
        2,
        "--top-p must be in (0, 1]",
    ),
    "negative temperature": (lambda p: ["sample", p / "nope", "--temperature", "-1"], 2, "--temperature"),
    "zero layers": (lambda p: ["train", "--num-layers", "0"], 2, "--num-layers must be at least 1"),
    "bptt zero": (lambda p: ["train", "--bptt", "0"], 2, "--bptt must be at least 1"),
    "tie weights sizes": (
        lambda p: ["train", "--tie-weights"],
        2,
        "--tie-weights needs --embedding-dim equal",
    ),
    "not a number": (
        lambda p: ["sample", p / "nope", "--length", "lots"],
        2,
        "'lots' is not a valid integer",
    ),
    "min-p zero": (lambda p: ["sample", p / "nope", "--min-p", "0"], 2, "--min-p must be in (0, 1] (got 0.0)"),
    "min-p above one": (lambda p: ["sample", p / "nope", "--min-p", "1.5"], 2, "--min-p must be in (0, 1]"),
    "negative penalty": (
        lambda p: ["sample", p / "nope", "--repetition-penalty", "-1"],
        2,
        "--repetition-penalty must be a positive number, 1 means off (got -1.0)",
    ),
    "window zero": (
        lambda p: ["sample", p / "nope", "--repetition-window", "0"],
        2,
        "--repetition-window must be at least 1 (got 0)",
    ),
    "ngram zero": (lambda p: ["sample", p / "nope", "--no-repeat-ngram", "0"], 2, "--no-repeat-ngram must be at least 1"),
    "beam with samples": (
        lambda p: ["sample", p / "nope", "--beam-width", "3", "--num-samples", "2"],
        2,
        "--beam-width gives one deterministic sample; leave out --num-samples",
    ),
    "prime and prime file": (
        lambda p: ["sample", p / "nope", "--prime", "a", "--prime-file", p / "x.txt"],
        2,
        "give --prime or --prime-file, not both",
    ),
    "prime file missing": (lambda p: ["sample", p / "nope", "--prime-file", p / "x.txt"], 1, "x.txt: no such file"),
    "score missing checkpoint": (lambda p: ["score", p / "nope", p / "x.txt"], 1, "no such checkpoint"),
    "chat negative length": (lambda p: ["chat", p / "nope", "--length", "-3"], 2, "--length must be 0 or more"),
}


# These cases run in the real process too, so CliRunner's answers are checked against it
# (exit 1 from a CharlstmError, exit 2 from a ConfigError and from Click's own usage error).
IN_THE_REAL_PROCESS = {"missing file", "zero layers", "not a number"}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_one_clear_line(tmp_path, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    make_args, exit_code, message = BAD_INPUTS[case]
    args = make_args(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = (run_process if case in IN_THE_REAL_PROCESS else run_cli)(*args)
    assert result.returncode == exit_code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before and not (tmp_path / "checkpoints").exists()  # nothing created or changed


def test_prime_with_unknown_characters(tiny_run):
    result = charlstm("sample", tiny_run, "--prime", "snow ☃")
    assert result.returncode == 2 and "'☃'" in result.stderr and result.stdout == ""


def test_existing_run_directory_is_refused(tiny_run, text_file):
    before = (tiny_run / "best.pt").read_bytes()
    result = charlstm("train", text_file, "--out", tiny_run, *TINY_MODEL)
    assert result.returncode == 1 and "already holds a run" in result.stderr
    assert (tiny_run / "best.pt").read_bytes() == before


def test_pickle_checkpoint_does_not_run(tmp_path):
    import torch

    from tests.test_checkpoint import _RunsCode

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "charlstm", "model": _RunsCode(marker)}, evil)
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    result = charlstm("eval", evil, evil, "--json", env=env)
    assert result.returncode == 1 and "refused" in result.stderr
    assert not marker.exists()


def _training_in_background(text_file, run_dir, settle: float):
    """`charlstm train` with no end in sight, once it has started training (plus ``settle`` s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", str(text_file), "--out", str(run_dir), *TINY_MODEL]
        + ["--max-steps", "1000000", "--eval-every", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (run_dir / "config.json").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(settle)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_a_checkpoint_and_exits(tmp_path, text_file, sig, code):
    run_dir = tmp_path / "run"
    proc = _training_in_background(text_file, run_dir, settle=1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    assert "checkpoint saved" in stderr and "Traceback" not in stderr
    assert f"continue with: charlstm train --resume {run_dir}" in stderr
    from charlstm.runs.checkpoint import load_checkpoint

    step = load_checkpoint(run_dir / "last.pt")["train_state"]["step"]
    assert step > 0
    if sig != signal.SIGTERM:
        return
    # Resume it, as the message says: it goes on from that step (FILE is the run's own text).
    refused = charlstm("train", "--resume", run_dir, "--hidden-size", "64", "--max-steps", step + 5)
    assert refused.returncode == 2 and "--hidden-size 64 (the run has 32)" in refused.stderr
    resumed = charlstm("train", "--resume", run_dir, "--max-steps", step + 5)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {step:,}" in resumed.stderr
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["step"] == step + 5


@pytest.mark.slow
def test_a_second_signal_stops_at_once(tmp_path, text_file):
    run_dir = tmp_path / "run"
    proc = _training_in_background(text_file, run_dir, settle=0.5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr
    assert not list(run_dir.glob(".tmp-*"))  # an interrupted save leaves no temporary file


def test_invalid_utf8_replaced_and_counted(tmp_path, small_text):
    path = tmp_path / "latin1.txt"
    path.write_bytes(small_text[:3000].encode() + "café naïve\n".encode("latin-1") * 3)
    strict = charlstm("train", path, "--out", tmp_path / "strict", *TINY_MODEL, "--max-steps", "2")
    assert strict.returncode == 1 and "--encoding-errors replace" in strict.stderr
    run_dir = tmp_path / "run"
    args = ["--out", run_dir, "--encoding-errors", "replace", *TINY_MODEL, "--max-steps", "2"]
    result = charlstm("train", path, *args)
    assert result.returncode == 0, result.stderr
    assert "6 byte sequences replaced by U+FFFD" in result.stderr
    report = json.loads(charlstm("eval", run_dir, path, "--json", "--encoding-errors", "replace").stdout)
    assert report["replacements"] == 6 and report["chars"] == 3000 + len("caf\ufffd na\ufffdve\n") * 3


def test_disk_full_while_training_is_one_clear_error(tmp_path, text_file):
    import resource

    run_dir = tmp_path / "run"
    first = charlstm("train", text_file, "--out", run_dir, *TINY_MODEL, "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    before = (run_dir / "last.pt").read_bytes()
    assert len(before) > 60_000

    def small_disk():  # writes past 60 KB fail with EFBIG, as a full disk fails with ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    result = run_process("train", "--resume", run_dir, "--max-steps", "4", preexec_fn=small_disk)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "cannot write the checkpoint (File too large)" in error[0]
    assert "the previous checkpoint there is kept" in error[0]
    assert (run_dir / "last.pt").read_bytes() == before
    assert not list(run_dir.glob(".tmp-*")) and all(p.stat().st_size > 0 for p in run_dir.iterdir())


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_one_long_line_without_newlines_trains(tmp_path, small_text, tokenizer):
    path = tmp_path / "line.txt"
    path.write_text((small_text.replace("\n", " ") * 10)[:200_000])  # one 200 KB line
    args = ["--out", tmp_path / "run", "--tokenizer", tokenizer, "--vocab-size", "400", *TINY_MODEL]
    result = charlstm("train", path, *args, "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    evaluated = charlstm("eval", tmp_path / "run", path, "--json")
    assert json.loads(evaluated.stdout)["bytes"] == path.stat().st_size


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells_train_sample_eval_inspect(tmp_path, text_file, cell):
    run_dir = tmp_path / cell
    result = charlstm("train", text_file, "--out", run_dir, "--cell", cell, *TINY_MODEL, "--max-steps", "5")
    assert result.returncode == 0, result.stderr
    from charlstm.runs.checkpoint import load_checkpoint

    assert load_checkpoint(run_dir)["model_config"]["cell"] == cell
    sample = charlstm("sample", run_dir, "--length", "30", "--seed", "0")
    assert sample.returncode == 0 and len(sample.stdout) == 31
    report = json.loads(charlstm("eval", run_dir, text_file, "--json").stdout)
    assert report["tokens"] == report["chars"] == len(text_file.read_text())
    seen = charlstm("inspect", run_dir, "--text", 'a "quoted" word (here)\nand more')
    assert seen.returncode == 0, seen.stderr
    assert "hidden unit" in seen.stdout and ("update" in seen.stdout) == (cell == "gru")


def test_inspect_command(tiny_run, tmp_path, text_file):
    page, png = tmp_path / "inside.html", tmp_path / "inside.png"
    result = run_process("inspect", tiny_run, text_file, "--max-chars", "400", "--html", page, "--at", "5", "--png", png)
    assert result.returncode == 0, result.stderr
    assert "gate saturation" in result.stdout and "top 5 next tokens after token 5" in result.stdout
    assert "layer 1 cell unit" in result.stdout and page.read_text().startswith("<!DOCTYPE html>")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in result.stderr and not png.exists()
    else:
        assert png.read_bytes().startswith(b"\x89PNG") and f"wrote {png}" in result.stderr
    png_again = charlstm("inspect", tiny_run, text_file, "--png", png)
    assert png_again.returncode == (1 if png.exists() else 0)
    again = charlstm("inspect", tiny_run, text_file, "--html", page)
    assert again.returncode == 1 and "already exists" in again.stderr
    one = charlstm("inspect", tiny_run, "--text", "hello there", "--show", "forget", "--unit", "3")
    assert one.returncode == 0 and "layer 1 forget unit 3" in one.stdout
    bad = charlstm("inspect", tiny_run, "--text", "hello", "--unit", "999", "--show", "update")
    assert bad.returncode == 2 and "--unit 999" in bad.stderr and "--show update" in bad.stderr
    neither = charlstm("inspect", tiny_run)
    assert neither.returncode == 2 and "give FILE or --text" in neither.stderr


@pytest.mark.slow
def test_long_range_experiment_command(tmp_path):
    out, png = tmp_path / "lr.json", tmp_path / "lr.png"
    result = run_process("experiment", "long-range", "--quick", "--seeds", "2", "--out", out, "--png", png)
    assert result.returncode == 0, result.stderr
    assert "recall: seeds that solved it" in result.stdout and "copy: seeds that solved it" in result.stdout
    assert "d=20" in result.stdout and "doubling check" in result.stdout and "forget gates of LSTM" in result.stdout
    assert "long-range: tasks recall, copy; distances 5, 20; 2 seeds; one model per distance and seed" in result.stderr
    assert "32/32 [" in result.stderr  # the progress bar, on stderr: 4 cells x 2 tasks x 2 distances x 2 seeds
    report = json.loads(out.read_text())
    assert len(report["results"]) == 4 * 2 * 2 * 2 and report["config"]["seeds"] == 2
    assert set(report["gradients"]) == {"LSTM", "LSTM, forget bias 3", "GRU", "RNN"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in result.stderr and not png.exists()
    else:
        assert png.read_bytes().startswith(b"\x89PNG")
    again = charlstm("experiment", "long-range", "--quick", "--out", out)
    assert again.returncode == 1 and again.stderr == f"Error: {out}: already exists; pass --force to replace it\n"
    old = charlstm("experiment", "long-range", "--quick", "--json", out)  # the old --json FILE: --out FILE, with a note
    assert old.returncode == 1 and old.stderr == (
        f"warning: --json FILE is deprecated; use --out {out} (--json alone prints JSON to stdout)\n"
        f"Error: {out}: already exists; pass --force to replace it\n"
    )
    bad = charlstm("experiment", "long-range", "--tasks", "recall,adding", "--seeds", "0")
    assert bad.returncode == 2 and bad.stderr == (
        "Error: --tasks must be some of recall, copy (got recall, adding); --seeds must be at least 1 (got 0)\n"
    )
    bad = charlstm("experiment", "long-range", "--distances", "10,x")
    assert bad.returncode == 2 and "10,x: give whole numbers separated by commas" in bad.stderr


@pytest.mark.slow
def test_long_range_curriculum_and_copy_only_say_what_they_did_not_measure():
    copy = charlstm("experiment", "long-range", "--quick", "--tasks", "copy", "--distances", "5", "--seeds", "1")
    assert copy.returncode == 0, copy.stderr
    assert "copy: seeds that solved it" in copy.stdout and "recall:" not in copy.stdout
    assert "gradients and forget gates: measured on the recall task, which was not run" in copy.stdout
    climb = charlstm("experiment", "long-range", "--quick", "--tasks", "recall", "--seeds", "1", "--curriculum")
    assert climb.returncode == 0, climb.stderr
    assert "curriculum: steps to solve each distance in turn" in climb.stdout
    assert "a curriculum per seed" in climb.stderr and "measured on single-distance runs" in climb.stdout


# ------------------------------------------------------------------------------ generation options


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def test_sample_json_records_everything_and_reproduces_from_its_seed(tiny_run):
    args = ["sample", tiny_run, "--prime", "The ", "--length", "30", "--num-samples", "2"]
    args += ["--min-p", "0.05", "--no-repeat-ngram", "6", "--json"]
    first = charlstm(*args)  # no --seed: one is drawn and recorded
    assert first.returncode == 0, first.stderr
    records = _json_lines(first.stdout)
    assert len(records) == 2 and set(records[0]) == {
        "text", "prime", "seed", "temperature", "tokens", "mean_logprob", "settings", "finish_reason"
    }
    assert records[0]["finish_reason"] == "length"  # --length ended it (no stop string, no pattern)
    assert records[0]["prime"] == "The " and len(records[0]["text"]) == 30 and records[0]["tokens"] == 30
    assert records[0]["settings"]["min_p"] == 0.05 and records[0]["settings"]["no_repeat_ngram"] == 6
    assert -10 < records[0]["mean_logprob"] < 0 and records[0]["seed"] == records[1]["seed"]
    again = charlstm(*args, "--seed", records[0]["seed"])
    assert _json_lines(again.stdout) == records  # the recorded seed makes every sample again


def test_several_temperatures_share_one_seed_and_are_labelled(tiny_run):
    both = charlstm("sample", tiny_run, "--prime", "a", "--length", "20", "--seed", "3", "--temperature", "0.5", "--temperature", "1.2")
    assert both.returncode == 0, both.stderr
    blocks = both.stdout.split("\n\n")
    assert blocks[0].startswith("== temperature 0.5 ==\na") and blocks[1].startswith("== temperature 1.2 ==\na")
    alone = charlstm("sample", tiny_run, "--prime", "a", "--length", "20", "--seed", "3", "--temperature", "1.2")
    assert blocks[1].split("\n", 1)[1] == alone.stdout


def test_beam_search_is_at_least_as_likely_as_greedy(tiny_run):
    common = ["sample", tiny_run, "--prime", "The ", "--length", "40", "--json"]
    greedy = _json_lines(charlstm(*common, "--temperature", "0").stdout)[0]
    beam = _json_lines(charlstm(*common, "--beam-width", "6").stdout)[0]
    assert greedy["tokens"] == beam["tokens"] == 40
    assert beam["mean_logprob"] * beam["tokens"] >= greedy["mean_logprob"] * greedy["tokens"] - 1e-6
    twice = _json_lines(charlstm(*common, "--beam-width", "6").stdout)[0]
    assert twice["text"] == beam["text"]  # deterministic


def test_prime_from_a_file_or_stdin_keeps_newlines_and_output_is_never_overwritten(tiny_run, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("def f():\n    return 1\n")
    out = tmp_path / "out.txt"
    result = charlstm("sample", tiny_run, "--prime-file", prime, "--length", "25", "--seed", "1", "--output", out)
    assert result.returncode == 0 and result.stdout == "" and f"wrote {out}" in result.stderr
    written = out.read_text()
    assert written.startswith("def f():\n    return 1\n") and len(written) == len(prime.read_text()) + 25 + 1
    piped = charlstm("sample", tiny_run, "--prime", "-", "--length", "25", "--seed", "1", input=prime.read_text())
    assert piped.stdout == written  # --prime - reads the same prime from stdin
    refused = charlstm("sample", tiny_run, "--length", "5", "--output", out)
    assert refused.returncode == 1 and "already exists; pass --force" in refused.stderr and out.read_text() == written
    forced = charlstm("sample", tiny_run, "--length", "5", "--seed", "1", "--output", out, "--force")
    assert forced.returncode == 0 and len(out.read_text()) == 5 + 1


def test_score_ranks_lines_and_shares_evals_loss(tiny_run, tmp_path, small_text):
    lines = [next(line for line in small_text.splitlines() if len(line) > 30), "zqxj vvkw qqzx", "", "the statement"]
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(lines) + "\n")
    result = charlstm("score", tiny_run, "--file", source, "--json")
    assert result.returncode == 0, result.stderr
    scores = _json_lines(result.stdout)
    assert [s["text"] for s in scores] == lines and scores[2]["tokens"] == 0
    assert scores[0]["bits_per_char"] < scores[1]["bits_per_char"]  # real prose beats junk
    piped = charlstm("score", tiny_run, input="\n".join(lines) + "\n")
    table = piped.stdout.splitlines()
    assert table[0].split() == ["logprob", "bits/char", "text"] and len(table) == 1 + len(lines)
    assert table[3].split()[1] == "-"  # the blank line: no tokens, no score



@pytest.mark.slow
def test_demo_trains_samples_and_evaluates_the_held_out_tenth(tmp_path):
    result = run_process("demo", "--max-time", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "checkpoints" / "python-reference"
    assert {"best.pt", "last.pt", "config.json", "metrics.jsonl"} <= {p.name for p in run_dir.iterdir()}
    assert "stopped by max_time" in result.stderr and "Next: charlstm train your_text.txt" in result.stderr
    sample, _, table = result.stdout.partition("\ncharlstm eval")
    assert sample.startswith("The ") and len(sample) == len("The ") + 400
    from charlstm.runs.directory import validation_text

    held_out = validation_text(run_dir)
    assert len(held_out) == 46_505  # the last tenth of the built-in corpus's 465,048 characters
    assert "built-in corpus, held-out tenth" in table and f"{len(held_out):,}" in table
    assert "bits per character" in table


def test_resume_with_the_file_given_again_reads_it_as_the_run_did(tmp_path, small_text):
    path = tmp_path / "latin1.txt"
    path.write_bytes(small_text[:3000].encode() + "café\n".encode("latin-1") * 3)
    run_dir = tmp_path / "run"
    first = charlstm("train", path, "--out", run_dir, "--encoding-errors", "replace", *TINY_MODEL, "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    again = charlstm("train", path, "--resume", run_dir, "--max-steps", "4")  # no --encoding-errors now
    assert again.returncode == 0, again.stderr
    said = "".join(again.stderr.split())  # the console wraps long lines
    assert f"resumingfromstep2(reused{run_dir / 'tokens.bin'})" in said  # not encoded again, strictly


def test_bytes_that_are_not_utf8_on_stdin_are_one_clear_line(tiny_run):
    for args in (["score", tiny_run], ["sample", tiny_run, "--prime", "-"]):
        result = subprocess.run(  # bytes through a real pipe; score's end-to-end test
            [sys.executable, "-m", "charlstm", *map(str, args)], input=b"ab\xffcd\n", capture_output=True, timeout=120
        )
        assert result.returncode == 1 and result.stdout == b""
        assert result.stderr.decode().strip().endswith("not valid UTF-8 (byte 0xff at byte offset 2); convert it to UTF-8")


def test_a_prime_file_of_one_newline_is_a_prime(tiny_run, tmp_path):
    prime = tmp_path / "newline.txt"
    prime.write_text("\n")
    result = charlstm("sample", tiny_run, "--prime-file", prime, "--length", "10", "--seed", "1")
    assert result.returncode == 0 and result.stdout.startswith("\n") and len(result.stdout) == 1 + 10 + 1


def test_chat_names_unknown_characters_in_the_line(tiny_run):
    result = charlstm("chat", tiny_run, "--length", "5", input="snow ☃\nThe \n")
    assert "error: the line has characters the model's vocabulary lacks: '☃'; leave them out" in result.stderr
    assert result.returncode == 0 and len(result.stdout) == 5 + 1  # the next line is answered: 5 characters and a newline


@pytest.fixture
def short_file(tmp_path, small_text):
    path = tmp_path / "short.txt"
    path.write_text(small_text[:3000])
    return path


def test_eval_adapt_reports_static_and_adapted_figures(tiny_run, short_file):
    text_file = short_file
    static = json.loads(invoke("eval", tiny_run, text_file, "--json").stdout)
    result = invoke("eval", tiny_run, text_file, "--json", "--adapt", "--adapt-lr", "0.05", "--adapt-bptt", "32",
                    "--adapt-depth", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["loss"] == pytest.approx(static["loss"], rel=1e-6)  # the static figure is unchanged
    adapted = report["adapted"]
    assert set(adapted) == {
        "loss", "bits_per_char", "bits_per_byte", "seconds", "adapt_lr", "adapt_decay", "adapt_bptt", "adapt_method",
        "adapt_depth", "adapt_tune", "adapt_prior", "tuned_lr", "tuned_decay", "cached",
    }
    assert (adapted["adapt_method"], adapted["adapt_lr"], adapted["adapt_decay"], adapted["adapt_bptt"],
            adapted["adapt_depth"], adapted["adapt_tune"], adapted["adapt_prior"]) == ("rms", 0.05, 0.01, 32, 2, 0.5, 300)
    assert adapted["tuned_lr"] != 0.05 and adapted["tuned_decay"] != 0.01  # --adapt-tune moved them
    assert adapted["bits_per_char"] == pytest.approx(adapted["loss"] / math.log(2) * report["tokens"] / report["chars"])
    assert adapted["loss"] != report["loss"] and adapted["seconds"] > 0
    table = invoke("eval", tiny_run, text_file, "--adapt")
    assert table.exit_code == 0 and "adapted bits per character" in table.stdout and "gain (bits per character)" in table.stdout
    wide = CliRunner().invoke(cli, ["eval", str(tiny_run), str(text_file), "--adapt"], env={"COLUMNS": "200"})
    assert re.search(r"adapted loss \(rms, lr 0\.002 -> [\d.e-]+, decay 0\.01 -> [\d.e-]+, bptt 64, depth 4, prior 300\)", wide.stdout)
    fixed = json.loads(invoke("eval", tiny_run, text_file, "--json", "--adapt", "--adapt-lr", "0.05", "--adapt-bptt",
                              "32", "--adapt-depth", "2", "--adapt-tune", "0").stdout)["adapted"]
    assert (fixed["tuned_lr"], fixed["tuned_decay"]) == (0.05, 0.01) and fixed["loss"] != adapted["loss"]
    alone = json.loads(invoke("eval", tiny_run, text_file, "--json", "--adapt", "--adapt-lr", "0.05", "--adapt-bptt",
                              "32", "--adapt-depth", "2", "--adapt-prior", "0").stdout)["adapted"]
    assert alone["adapt_prior"] == 0 and alone["loss"] != adapted["loss"]  # the text's own mean squares alone


def test_adapt_options_need_adapt(tiny_run, text_file):
    result = charlstm("eval", tiny_run, text_file, "--adapt-lr", "0.1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "Error: --adapt-method, --adapt-lr, --adapt-decay, --adapt-tune, --adapt-prior, --adapt-bptt and --adapt-depth "
        "need --adapt "
        "(see 'charlstm eval --help')"
    )
    bad = charlstm("eval", tiny_run, text_file, "--adapt", "--adapt-decay", "2")
    assert bad.returncode == 2 and "--adapt-decay must be in [0, 1] (got 2.0)" in bad.stderr
    sampled = invoke("sample", tiny_run, "--adapt-bptt", "8")
    assert sampled.exit_code == 2 and "need --adapt-to" in sampled.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adapt", "--adapt-method", "adam"], "Invalid value for '--adapt-method': 'adam' is not one of 'rms', 'sgd'."),
        (["--adapt", "--adapt-lr", "0"], "--adapt-lr must be a positive number (got 0.0)"),
        (["--adapt", "--adapt-depth", "-1"], "--adapt-depth must be 0 or more (got -1)"),
        (["--adapt", "--adapt-tune", "-1"], "--adapt-tune must be in [0, 10] (got -1.0)"),
        (["--cache-size", "-5"], "--cache-size must be 0 or more (got -5)"),
        (["--cache-size", "10", "--cache-theta", "-1"], "--cache-theta must be a positive number (got -1.0)"),
        (["--cache-size", "10", "--cache-lambda", "1"], "--cache-lambda must be in [0, 1) (got 1.0)"),
        (["--cache-lambda", "0.2"], "--cache-theta and --cache-lambda need --cache-size (above 0)"),
    ],
)
def test_bad_adapt_and_cache_values_are_one_line_exit_2(tiny_run, text_file, args, message):
    result = charlstm("eval", tiny_run, text_file, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_eval_and_score_with_the_cache(tiny_run, short_file):
    report = json.loads(invoke("eval", tiny_run, short_file, "--json", "--adapt", "--cache-size", "200").stdout)
    for cached in (report["cached"], report["adapted"]["cached"]):
        assert cached["cache_size"] == 200 and 0 < cached["bits_per_byte"] < 10
    lines = short_file.read_text().splitlines()[:5]
    with_cache = charlstm("score", tiny_run, "--json", "--cache-size", "100", "--cache-theta", "1", "--cache-lambda", "0", input="\n".join(lines))
    without = charlstm("score", tiny_run, "--json", input="\n".join(lines))
    assert with_cache.returncode == 0, with_cache.stderr
    a = [json.loads(l)["logprob"] for l in with_cache.stdout.splitlines()]
    b = [json.loads(l)["logprob"] for l in without.stdout.splitlines()]
    assert a == pytest.approx(b, rel=1e-4)  # lambda 0: the model's own scores


def test_sample_adapt_to_adapts_then_samples(tiny_run, short_file, tmp_path):
    text_file = short_file
    result = charlstm("sample", tiny_run, "--adapt-to", text_file, "--length", "30", "--seed", "3", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    tuned = record["adapted_to"].pop("tuned_lr"), record["adapted_to"].pop("tuned_decay")
    assert record["adapted_to"] == {
        "text": str(text_file), "adapt_method": "rms", "adapt_lr": 0.002, "adapt_decay": 0.01, "adapt_bptt": 64,
        "adapt_depth": 4, "adapt_tune": 0.5, "adapt_prior": 300,
    }
    assert tuned[0] != 0.002 and tuned[1] != 0.01
    assert f"(lr 0.002 -> {tuned[0]:.2g}, decay 0.01 -> {tuned[1]:.2g})" in result.stderr
    assert record["tokens"] == 30
    assert result.stderr.startswith(f"adapted to {text_file}: 3,000 tokens in ")
    plain = json.loads(charlstm("sample", tiny_run, "--length", "30", "--seed", "3", "--json").stdout)
    assert plain["mean_logprob"] != record["mean_logprob"]  # other weights
    missing = charlstm("sample", tiny_run, "--adapt-to", tmp_path / "nope.txt")
    assert missing.returncode == 1 and missing.stderr.strip() == f"Error: {tmp_path / 'nope.txt'}: no such file"


def test_train_size_auto_needs_max_time_and_says_its_choice(tmp_path, text_file):
    result = charlstm("train", text_file, "--size", "auto", "--out", tmp_path / "a")
    assert result.returncode == 2
    assert "--size auto needs --max-time: it sizes the model for the time budget" in result.stderr
    sized = charlstm("train", text_file, "--max-time", "1", "--batch-size", "4", "--bptt", "16",
                     "--out", tmp_path / "b", "--no-samples")
    assert sized.returncode == 0, sized.stderr
    size = json.loads((tmp_path / "b" / "config.json").read_text())["info"]["size"]
    assert f"size auto: {size['shape']} LSTM, dropout {size['dropout']:g}: " in sized.stderr.replace("\n", " ")
