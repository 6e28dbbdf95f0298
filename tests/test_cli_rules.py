"""One language across commands (issue 21): every command's --help is walked and held to the
rules; then what the rules promise is tried: FILE arguments, --out/--force and the one
"already exists" message, --json as a flag, the deprecated spellings, quiet broken pipes (through
the real process), inspect without colour, chat's and score's small things, demo's seed."""

import json
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import charlstm
from charlstm.cli import cli
from charlstm.cli.base import EXIT_BROKEN_PIPE, RUN_HELP
from tests.conftest import TINY_MODEL, run_cli

# ------------------------------------------------------------------------------------ --help


def _commands(group=cli, path=()):
    """Every command, by its path (``("experiment", "long-range")``), groups walked."""
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = dict(_commands())
# Commands that load a model from RUN (the others take RUN as a run directory, or none).
LOADS_A_MODEL = {"sample", "chat", "score", "eval", "inspect", "export", "serve", "compress", "decompress"}
WRITES_FILES = ("--out", "--png", "--html")
DEPRECATED = {"--output", "--file"}  # kept for a release, hidden from --help


def _help(path) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="charlstm", terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _options(command) -> dict:
    return {opt: p for p in command.params if isinstance(p, click.Option) for opt in (*p.opts, *p.secondary_opts)}


def test_the_walk_sees_every_command():
    assert {"train", "demo", "sample", "chat", "score", "eval", "inspect", "info", "plot"} <= {p[-1] for p in COMMANDS}
    assert ("experiment", "long-range") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_speaks_the_same_language(path):
    command, text = COMMANDS[path], _help(path)
    usage = text.splitlines()[0]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    options = _options(command)
    # The model is RUN in every usage line, never CHECKPOINT; a command that loads one says what it may be.
    assert "CHECKPOINT" not in text
    if path[-1] in LOADS_A_MODEL:
        assert re.search(r"\bRUN\b", usage), usage
        assert RUN_HELP in " ".join(text.split()), text
    for argument in arguments:
        assert argument.name in ("run", "runs", "files"), (path, argument.name)
        metavar = argument.make_metavar(click.Context(command)) if argument.metavar is None else argument.metavar
        assert metavar in ("RUN", "RUN...", "FILE...", "[FILE]..."), (path, metavar)
    # --json is a flag (long-range's keeps the old --json FILE working, but --help shows a flag).
    if "--json" in options:
        option = options["--json"]
        assert option.is_flag or (option.flag_value == "-" and option.metavar == ""), path
        assert re.search(r"^\s+--json\s{2,}\S", text, re.M), text
    # No --output but the deprecated, hidden one; every file written has --force and one help line.
    for old in DEPRECATED & set(options):
        assert options[old].hidden and old not in text, (path, old)
    writes = [opt for opt in WRITES_FILES if opt in options]
    if writes and path != ("train",):  # train's --out is a run directory, never replaced
        assert "--force" in options and options["--force"].is_flag, path
        for opt in writes:
            assert options[opt].metavar == "PATH", (path, opt)
    # Nothing promises a flag the command lacks.
    for flag in set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", " ".join(text.split()))):
        if flag not in options and flag not in ("--help", "--version") and not flag.endswith("-"):  # not a wrapped one
            assert path == ("demo",) or flag in _other_commands_flags(), (path, flag)
    if path == ("chat",):
        assert "--json" not in text


def _other_commands_flags() -> set:
    """Flags a help text may name when it points at another command (e.g. 'as eval --adapt does')."""
    return {opt for command in COMMANDS.values() for opt in _options(command)}


def test_inspect_counts_layer_and_unit_from_one(tiny_run):
    options = _options(COMMANDS[("inspect",)])
    assert options["--layer"].type.min == 1 and options["--unit"].type.min == 1
    one = run_cli("inspect", tiny_run, "--text", "hello there", "--show", "forget", "--layer", "1", "--unit", "1")
    assert one.returncode == 0, one.stderr
    assert "layer 1 forget unit 1" in one.stdout
    report = charlstm.load(tiny_run, device="cpu").inspect("hello there", show="forget", unit=1)
    assert report.units[0].unit == 0 and report.units[0].label == "layer 1 forget unit 1"  # the first unit
    last = run_cli("inspect", tiny_run, "--text", "hello", "--unit", "32")
    assert last.returncode == 0 and "cell unit 32" in last.stdout
    over = run_cli("inspect", tiny_run, "--text", "hello", "--unit", "33")
    assert over.returncode == 2 and over.stderr == "Error: --unit 33: layers have units 1-32\n"
    zero = run_cli("inspect", tiny_run, "--text", "hello", "--unit", "0")
    assert zero.returncode == 2 and "0 is not in the range x>=1" in zero.stderr


# ------------------------------------------------------------------------------ FILE arguments


@pytest.fixture
def texts(tmp_path, small_text):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text(small_text[:3000])
    (folder / "b.txt").write_text(small_text[3000:6000])
    return folder


def test_eval_reads_files_as_train_does(tiny_run, texts):
    a, b = texts / "a.txt", texts / "b.txt"
    both = json.loads(run_cli("eval", tiny_run, a, b, "--json").stdout)
    folder = json.loads(run_cli("eval", tiny_run, texts, "--json").stdout)
    pattern = run_cli("eval", tiny_run, str(texts / "*.txt"), "--json")
    assert pattern.returncode == 0, pattern.stderr
    assert json.loads(pattern.stdout) == {**both, "seconds": json.loads(pattern.stdout)["seconds"]}
    # the two files joined by train's separator (a blank line): both files' characters and 2 more
    assert both["chars"] == folder["chars"] == 3000 + 3000 + 2 and both["loss"] == pytest.approx(folder["loss"])
    one = json.loads(run_cli("eval", tiny_run, a, "--json").stdout)
    assert one["chars"] == 3000
    none = run_cli("eval", tiny_run)
    assert none.returncode == 2 and "Missing argument 'FILE...'" in none.stderr


def test_score_takes_file_arguments_stdin_and_the_old_file_option(tiny_run, texts, tmp_path):
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("the cat\nsat on\n")
    second.write_text("the mat\n")
    both = run_cli("score", tiny_run, first, second, "--json")
    assert both.returncode == 0 and both.stderr == ""
    assert [json.loads(line)["text"] for line in both.stdout.splitlines()] == ["the cat", "sat on", "the mat"]
    piped = run_cli("score", tiny_run, "-", "--json", input="the cat\nsat on\n")
    dashless = run_cli("score", tiny_run, "--json", input="the cat\nsat on\n")
    assert piped.stdout == dashless.stdout == "\n".join(both.stdout.splitlines()[:2]) + "\n"
    folder = run_cli("score", tiny_run, texts)
    assert folder.returncode == 0 and len(folder.stdout.splitlines()) == 1 + len(
        (texts / "a.txt").read_text().splitlines() + (texts / "b.txt").read_text().splitlines()
    )
    old = run_cli("score", tiny_run, "--file", first, "--json")
    assert old.returncode == 0 and old.stdout == "\n".join(both.stdout.splitlines()[:2]) + "\n"
    assert old.stderr == "warning: --file is deprecated; give FILE as an argument: charlstm score RUN FILE\n"


def test_inspect_reads_a_directory(tiny_run, texts):
    result = run_cli("inspect", tiny_run, texts, "--max-chars", "200", "--unit", "2")
    assert result.returncode == 0, result.stderr
    assert "200 tokens" in result.stdout


# ----------------------------------------------------------------------- --out, --force, --json


def test_every_file_option_refuses_an_existing_file_with_one_message(tiny_run, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    message = f"Error: {taken}: already exists; pass --force to replace it\n"
    for args in (
        ["sample", tiny_run, "--length", "5", "--out", taken],
        ["sample", tiny_run, "--length", "5", "--output", taken],
        ["plot", tiny_run, "--out", taken],
        ["inspect", tiny_run, "--text", "hello", "--html", taken],
        ["inspect", tiny_run, "--text", "hello", "--png", taken],
        ["experiment", "long-range", "--quick", "--out", taken],
        ["experiment", "long-range", "--quick", "--png", taken],
    ):
        result = run_cli(*args)
        assert result.returncode == 1 and result.stdout == "", args
        assert result.stderr.splitlines()[-1] + "\n" == message, (args, result.stderr)
        assert taken.read_text() == "keep me"
    forced = run_cli("inspect", tiny_run, "--text", "hello there", "--html", taken, "--force")
    assert forced.returncode == 0 and taken.read_text().startswith("<!DOCTYPE html>")
    same = run_cli("inspect", tiny_run, "--text", "hello", "--html", tmp_path / "x", "--png", tmp_path / "x")
    assert same.returncode == 2 and "--html and --png name the same file" in same.stderr
    nowhere = run_cli("plot", tiny_run, "--out", tmp_path / "no" / "such" / "dir.png")
    assert nowhere.returncode == 1 and "its directory does not exist" in nowhere.stderr


def test_sample_out_and_its_old_spelling(tiny_run, tmp_path):
    new, old = tmp_path / "new.txt", tmp_path / "old.txt"
    written = run_cli("sample", tiny_run, "--length", "30", "--seed", "4", "--out", new)
    assert written.returncode == 0 and written.stdout == "" and written.stderr == f"wrote {new}\n"
    kept = run_cli("sample", tiny_run, "--length", "30", "--seed", "4", "--output", old)
    assert kept.returncode == 0 and old.read_text() == new.read_text()
    assert kept.stderr == f"warning: --output is deprecated; use --out\nwrote {old}\n"
    both = run_cli("sample", tiny_run, "--out", new, "--output", old)
    assert both.returncode == 2 and "give --out (or the old --output), not both" in both.stderr


def test_long_range_json_is_a_flag_printing_to_stdout():
    result = run_cli("experiment", "long-range", "--quick", "--tasks", "recall", "--distances", "5", "--seeds", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # only JSON on stdout: the tables are left out
    assert report["config"]["seeds"] == 1 and len(report["results"]) == 4


# -------------------------------------------------------------------------------------- pipes


def _reader_goes_away(args, read: int, input: bytes | None = None):
    """Run ``charlstm ARGS`` with stdout a pipe; read ``read`` bytes of it (0: none), close it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "charlstm", *map(str, args)],
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if input is not None:
        proc.stdin.write(input)
        proc.stdin.close()
    got = proc.stdout.read(read) if read else b""
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=240)
    return proc.returncode, got, stderr.decode()


@pytest.mark.parametrize(
    "case",
    ["sample", "sample --json", "info", "score", "eval", "inspect", "eval --json"],
)
def test_a_reader_that_goes_away_ends_every_command_alike(tiny_run, text_file, case):
    """`charlstm ... | head -c 100`: exit 141, as the shell's own tools, nothing on stderr."""
    lines = "\n".join(f"line {i} of the text" for i in range(4000)).encode() + b"\n"
    args, read, stdin = {
        "sample": (["sample", tiny_run, "--length", "20000", "--seed", "1"], 100, None),
        "sample --json": (["sample", tiny_run, "--length", "2000", "--num-samples", "3", "--json"], 0, None),
        "info": (["info", tiny_run, tiny_run], 0, None),
        "score": (["score", tiny_run, "-"], 100, lines),  # 4000 lines: far more than a pipe holds
        "eval": (["eval", tiny_run, text_file], 0, None),
        "eval --json": (["eval", tiny_run, text_file, "--json"], 0, None),
        "inspect": (["inspect", tiny_run, "--text", "hello there"], 0, None),
    }[case]
    code, got, stderr = _reader_goes_away(args, read, stdin)
    assert (code, stderr) == (EXIT_BROKEN_PIPE, "")
    assert len(got) == read


# ----------------------------------------------------------------------- inspect without colour


@pytest.mark.parametrize(
    "env", [{}, {"NO_COLOR": "1"}, {"NO_COLOR": "1", "FORCE_COLOR": "1"}], ids=["piped", "NO_COLOR", "both"]
)
def test_inspect_without_colour_draws_a_sparkline(tiny_run, env):
    text = "hello there"
    result = run_cli("inspect", tiny_run, "--text", text, "--unit", "5", env={"FORCE_COLOR": None, **env})
    assert result.returncode == 0, result.stderr
    assert "red positive" not in result.stdout and "--html PATH shows it in colour" in " ".join(result.stdout.split())
    lines = result.stdout.splitlines()
    row = lines.index(text)
    marks = lines[row + 1]
    assert len(marks) == len(text) and set(marks) <= set("▁▂▃▄▅▆▇█")
    values = charlstm.load(tiny_run, device="cpu").inspect(text, unit=5).units[0].values
    by_value = [marks[i] for i in values.argsort()]
    assert by_value == sorted(by_value) and by_value[0] < by_value[-1]  # the higher the value, the taller its mark


def test_inspect_in_colour_keeps_its_legend(tiny_run):
    result = run_cli("inspect", tiny_run, "--text", "hello there", "--unit", "5", env={"FORCE_COLOR": "1", "NO_COLOR": None})
    assert result.returncode == 0 and "\x1b[" in result.stdout
    assert "(red positive, blue negative, white zero)" in " ".join(result.stdout.split())


def test_the_inspect_page_says_one_layer(tiny_run, tmp_path):
    page = tmp_path / "p.html"
    assert run_cli("inspect", tiny_run, "--text", "hello there", "--html", page).returncode == 0
    assert "LSTM, 1 layer, " in page.read_text() and "1 layers" not in page.read_text()


# ------------------------------------------------------------------------------- chat and score


def test_chat_says_what_changed_and_lists_every_command(tiny_run):
    script = "/temperature 0.5\n/top-k 5\n/top-k off\n/settings\n/nonsense\n/temperature x\n"
    result = run_cli("chat", tiny_run, "--seed", "3", input=script)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:3] == ["temperature 0.8 -> 0.5", "top-k off -> 5", "top-k 5 -> off"]
    assert "None" not in lines[3] and "top-k off" in lines[3] and "temperature 0.5" in lines[3] and "seed 3" in lines[3]
    assert lines[4].startswith("error: /nonsense: not a command; the commands are ")
    for command in ("/temperature", "/top-k", "/seed", "/top,", "/reset", "/settings", "/help", "/quit"):
        assert command in lines[4]
    assert lines[5] == "error: --temperature 'x' is not a float"


def test_score_warns_once_about_characters_the_model_never_saw(tiny_run):
    result = run_cli("score", tiny_run, "--json", input="☃ the cat ☃\nnaïve\n")
    assert result.returncode == 0
    assert result.stderr == "warning: 3 characters the model never saw are scored as unknown: 'ï' '☃'\n"
    plain = run_cli("score", tiny_run, input="the cat\n")
    assert plain.stderr == ""


def test_score_reports_progress_over_a_long_line(tiny_run):
    lm = charlstm.load(tiny_run, device="cpu")
    seen = []
    results = lm.score(["the cat sat " * 100, "a"], on_progress=seen.append)
    assert sum(seen) == sum(r.tokens for r in results) == 1201 and len(seen) > 2  # a call per window


# --------------------------------------------------------------------------------------- demo


def test_demo_prints_the_command_that_writes_its_sample_again(tmp_path, monkeypatch):
    real_train = charlstm.train

    def tiny_train(source, **kwargs):  # the demo, in seconds: a tiny model, a few steps
        shape = dict(zip(TINY_MODEL[::2], TINY_MODEL[1::2]))
        settings = {flag[2:].replace("-", "_"): int(value) for flag, value in shape.items()}
        return real_train(source, out=tmp_path / "demo", max_steps=3, eval_every=3, **settings, **kwargs)

    monkeypatch.setattr(charlstm, "train", tiny_train)
    demo = run_cli("demo", "--device", "cpu")
    assert demo.returncode == 0, demo.stderr
    command = next(line for line in demo.stderr.splitlines() if line.startswith("charlstm sample "))
    assert "--seed 0" in command
    import shlex

    again = run_cli(*shlex.split(command)[1:])
    assert again.returncode == 0 and demo.stdout.startswith(again.stdout)
