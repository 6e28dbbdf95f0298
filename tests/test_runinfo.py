"""charlstm info and charlstm plot, on finished, running and killed runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from charlstm.cli import cli
from tests.conftest import TINY_MODEL, run_cli, run_process


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], env={"COLUMNS": "1000"}, **kwargs)


charlstm = run_cli  # in this process; info's and plot's end-to-end tests call run_process
WIDE = dict(os.environ, COLUMNS="1000")


def test_info_on_a_finished_run(tmp_path, text_file):
    run = tmp_path / "done"
    args = ["train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "4", "--eval-every", "2", "--sample-every", "4"]
    assert charlstm(*args).returncode == 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    [row] = json.loads(invoke("info", run, "--json").stdout)
    best = min(m["val_loss"] for m in metrics)
    assert row["status"] == "finished: max_steps"
    assert row["command"] == "charlstm " + " ".join(map(str, args))
    assert (row["steps"], row["time"], row["best_val_loss"]) == (4, metrics[-1]["time"], best)
    assert abs(row["best_bits_per_char"] - best / 0.6931471805599453) < 1e-9  # a char model
    assert row["model"] == "lstm 1x32" and row["tokenizer"].startswith("char (")
    assert row["data"] == str(text_file) and row["num_parameters"] > 0
    samples = (run / "samples.txt").read_text()
    assert row["last_sample"] == samples.split("\n", 1)[1][:-2] and len(row["last_sample"]) > 200
    table = run_process("info", run, env=WIDE)  # info's end-to-end test
    assert table.returncode == 0 and "finished: max_steps" in table.stdout and f" {best:.4f} " in table.stdout


@pytest.mark.slow
def test_info_on_a_running_then_killed_run(tmp_path, text_file):
    run = tmp_path / "live"
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "train", str(text_file), "--out", str(run), *TINY_MODEL,
         "--max-steps", "1000000", "--eval-every", "3"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 60
        while not (run / "metrics.jsonl").exists() and time.time() < deadline:
            time.sleep(0.1)
        [row] = json.loads(invoke("info", run, "--json").stdout)
        assert row["status"] == "running" and row["steps"] >= 3
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    [row] = json.loads(invoke("info", run, "--json").stdout)
    assert row["status"] == "killed"
    missing = invoke("info", tmp_path / "nope")
    assert missing.exit_code == 1 and missing.stderr == f"Error: {tmp_path / 'nope'}: no such run directory\n"


def test_plot_png_terminal_chart_and_missing_matplotlib(tiny_run, tmp_path, monkeypatch):
    chart = run_process("plot", tiny_run, tiny_run, env=WIDE)  # plot's end-to-end test
    assert chart.returncode == 0, chart.stderr
    lines = chart.stdout.splitlines()
    assert lines[0].startswith("tiny: validation loss ") and "steps 10-20" in lines[0]
    assert set("".join(lines[1:7])) <= set(" ▁▂▃▄▅▆▇█│.0123456789")
    png = tmp_path / "curves.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pass  # an optional extra: only the message below can be checked
    else:
        written = invoke("plot", tiny_run, "--out", png)
        assert written.exit_code == 0, written.output
        assert png.read_bytes().startswith(b"\x89PNG") and written.stderr == f"wrote {png}\n"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    missing = invoke("plot", tiny_run, "--out", tmp_path / "other.png")
    assert missing.exit_code == 1 and not (tmp_path / "other.png").exists()
    assert missing.stderr == (
        "Error: plot --out needs matplotlib, which is not installed: pip install matplotlib (or pip install "
        "'charlstm[plot]'); without --out the curves are drawn in the terminal\n"
    )


def test_info_skips_metrics_lines_of_another_shape(tmp_path, text_file):
    run = tmp_path / "done"
    assert charlstm("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "2").returncode == 0
    good = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text("[]\n" + '{"x": 1}\n' + good)
    [row] = json.loads(invoke("info", run, "--json").stdout)
    assert row["steps"] == 2 and row["best_val_loss"] == json.loads(good.splitlines()[-1])["val_loss"]
    (run / "config.json").write_text("[1, 2]")
    result = invoke("info", run)
    assert result.exit_code == 1 and f"{run}: config.json does not describe a charlstm run" in result.output



def test_info_keeps_the_first_command_and_every_resume_quoted_to_copy(tmp_path, text_file):
    import shlex

    run = tmp_path / "run"
    first = ["train", str(tmp_path / "*.txt"), "--out", str(run), *TINY_MODEL, "--max-steps", "2", "--eval-every", "2"]
    assert charlstm(*first).returncode == 0
    again = ["train", "--resume", str(run), "--max-steps", "4"]
    assert charlstm(*again).returncode == 0
    assert charlstm("train", "--resume", run, "--max-steps", "5").returncode == 0
    [row] = json.loads(invoke("info", run, "--json").stdout)
    assert row["command"] == shlex.join(["charlstm", *first]) and f"'{tmp_path / '*.txt'}'" in row["command"]
    assert row["resumes"] == [
        {"command": shlex.join(["charlstm", *again]), "step": 2},
        {"command": f"charlstm train --resume {run} --max-steps 5", "step": 4},
    ]
    text = invoke("info", run).stdout
    assert f"run: {row['command']}\n  resumed at step 2: {row['resumes'][0]['command']}\n" in text


def test_info_reads_a_config_json_written_before_resumes_were_recorded(tmp_path, text_file):
    run = tmp_path / "run"
    assert charlstm("train", text_file, "--out", run, *TINY_MODEL, "--max-steps", "2").returncode == 0
    record = json.loads((run / "config.json").read_text())
    del record["resumes"]
    (run / "config.json").write_text(json.dumps(record))
    [row] = json.loads(invoke("info", run, "--json").stdout)
    assert row["command"].startswith("charlstm train ") and row["resumes"] == []
    assert charlstm("train", "--resume", run, "--max-steps", "3").returncode == 0
    [row] = json.loads(invoke("info", run, "--json").stdout)
    assert row["command"].startswith(f"charlstm train {text_file}") and row["resumes"][0]["step"] == 2
