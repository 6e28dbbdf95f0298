"""Settings people keep: --config run.toml and CHARLSTM_* variables, with the command line first."""

import json
import os

from tests.conftest import TINY_MODEL, run_cli


def charlstm(*args, env=None):
    """In this process, with no CHARLSTM_* variable but those in ``env``."""
    env = {k: None for k in os.environ if k.startswith("CHARLSTM_")} | (env or {})
    return run_cli(*args, env=env)


def test_command_line_beats_environment_beats_file_beats_defaults(tmp_path, text_file):
    settings = tmp_path / "run.toml"
    settings.write_text(
        '[train]\nhidden-size = 48\nembedding_dim = 16\nnum-layers = 1\nbatch-size = 4\nbptt = 16\n'
        'max-steps = 2\nlr = 0.01\nlr-schedule = "constant"\n\n[sample]\nlength = 7\n'
    )
    run = tmp_path / "run"
    result = charlstm(
        "train", text_file, "--config", settings, "--out", run, "--lr", "0.02",
        env={"CHARLSTM_TRAIN_NUM_LAYERS": "2", "CHARLSTM_TRAIN_LR": "0.03"},
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden_size"] == 48  # the file
    assert config["model"]["num_layers"] == 2  # the environment, over the file
    assert config["train"]["lr"] == 0.02  # the command line, over both
    assert config["train"]["lr_schedule"] == "constant" and config["train"]["bptt"] == 16
    assert config["train"]["warmup_steps"] == 20  # the default
    sample = charlstm("sample", run, "--config", settings, "--seed", "0", "--no-echo-prime")
    assert sample.returncode == 0 and len(sample.stdout) == 7 + 1


def test_a_key_that_is_not_an_option_is_named(tmp_path, text_file):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nhiden-size = 512\nseed = 3\n")
    result = charlstm("train", text_file, "--config", bad, *TINY_MODEL)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"Error: --config {bad}: [train] hiden-size: not an option of charlstm train (keys are named as "
        "the flags, without the leading --)\n"
    )
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    result = charlstm("train", text_file, "--config", broken)
    assert result.returncode == 2 and result.stderr.startswith(f"Error: --config {broken}: not valid TOML (")


def test_shell_completion_script(tmp_path):
    result = charlstm(env={"_CHARLSTM_COMPLETE": "bash_source"})
    assert result.returncode == 0 and "_charlstm_completion()" in result.stdout
    words = charlstm(env={"_CHARLSTM_COMPLETE": "bash_complete", "COMP_WORDS": "charlstm train --hidd", "COMP_CWORD": "2"})
    assert words.stdout.strip() == "plain,--hidden-size"


def test_a_toml_value_for_an_option_given_several_times_and_a_file_that_is_not_utf8(tmp_path, tiny_run):
    config = tmp_path / "run.toml"
    config.write_text("[sample]\ntemperature = 0\nlength = 12\n")
    result = charlstm("sample", tiny_run, "--config", config, "--prime", "a")
    assert result.returncode == 0, result.stderr
    greedy = charlstm("sample", tiny_run, "--temperature", "0", "--length", "12", "--prime", "a")
    assert result.stdout == greedy.stdout and len(result.stdout) == 1 + 12 + 1
    config.write_bytes(b"[sample]\nprime = \"caf\xe9\"\n")
    bad = charlstm("sample", tiny_run, "--config", config)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"Error: --config {config}: not valid TOML (a TOML file is UTF-8 text)"
    ]
