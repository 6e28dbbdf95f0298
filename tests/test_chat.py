import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest
import torch

from charlstm.generation.chat import ChatSession
from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint
from charlstm.config import SampleConfig
from charlstm.errors import ConfigError
from charlstm.generation.sampling import generate


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return model_from_checkpoint(load_checkpoint(tiny_run))


def _reply(session, line):
    return "".join(session.reply(line))


def test_a_turn_goes_on_where_the_last_left_off(loaded):
    """Greedy turns: the second reply is what the model writes after the whole text so far."""
    model, tok = loaded
    session = ChatSession(model, tok, SampleConfig(length=15, temperature=0, seed=1), "cpu")
    first = _reply(session, "The ")
    second = _reply(session, " and")
    whole = "".join(
        p[0] for p in generate(model, tok, SampleConfig(prime="The " + first + " and", length=15, temperature=0), "cpu")
    )
    assert len(first) == len(second) == 15 and second == whole


def test_reset_starts_again_and_settings_change_between_turns(loaded):
    model, tok = loaded
    session = ChatSession(model, tok, SampleConfig(length=20, seed=5), "cpu")
    first = _reply(session, "in")
    _reply(session, "more")
    session.reset()
    assert session.hidden is None and _reply(session, "in") == first  # as new: same seed, same state
    session.set("length", "7")
    session.set("top-k", "3")
    session.set("min-p", "off")
    assert len(_reply(session, "x")) == 7 and session.config.top_k == 3 and session.config.min_p is None
    with pytest.raises(ConfigError, match=r"--temperature must be 0 \(greedy\) or more \(got -1.0\)"):
        session.set("temperature", "-1")
    with pytest.raises(ConfigError, match="--length 'lots' is not a int"):
        session.set("length", "lots")
    with pytest.raises(ConfigError, match="/colour: not a setting"):
        session.set("colour", "red")
    assert session.config.temperature == 0.8  # a refused value changes nothing


def test_top_next_is_the_models_distribution(loaded):
    model, tok = loaded
    session = ChatSession(model, tok, SampleConfig(length=5, seed=0), "cpu")
    _reply(session, "The cat")
    top = session.top_next(5)
    assert len(top) == 5 and [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    probs = session.logits.float().softmax(-1)
    assert top[0][1] == pytest.approx(float(probs.max()), rel=1e-6)
    session.reset()  # nothing read: the distribution after the start of a text (a newline)
    with torch.no_grad():
        start = model(torch.tensor([[int(tok.encode("\n")[0])]]))[0][-1, 0].softmax(-1)
    start[tok.unk_id] = 0.0
    assert session.top_next(1)[0][1] == pytest.approx(float(start.max()), rel=1e-6)


def _chat(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "charlstm", "chat", *map(str, args)],
        capture_output=True, text=True, timeout=120, **kwargs,
    )


def test_chat_answers_each_line_of_a_script(tiny_run):
    script = "The \n/top 3\nhello\n/temperature -2\n/reset\nThe \n"
    result = _chat(tiny_run, "--seed", "9", "--length", "12", input=script)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert len(lines[0]) == 12 and len(lines[4]) == 12  # two replies, then /top's 3 lines
    assert len([line for line in lines[1:4] if line.strip()]) == 3
    assert lines[5] == lines[0]  # after /reset, the same line and seed: the same reply
    assert "error: --temperature must be 0 (greedy) or more (got -2.0)" in result.stderr
    assert "(the text so far is forgotten)" in result.stderr and "Traceback" not in result.stderr


def _read_until(fd, marker: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.time() + timeout
    while marker not in seen and time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break
    return seen


def _read_until_quiet(fd, quiet: float = 1.5, timeout: float = 60) -> bytes:
    """What the terminal shows until it has been quiet for ``quiet`` seconds."""
    seen = b""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], quiet)
        if not ready:
            break
        try:
            seen += os.read(fd, 4096)
        except OSError:
            break
    return seen


@pytest.mark.slow
def test_chat_in_a_terminal_ctrl_c_stops_a_reply_and_ctrl_d_leaves(tiny_run):
    pid, fd = pty.fork()
    if pid == 0:  # the child: charlstm chat on a real terminal
        os.execv(sys.executable, [sys.executable, "-m", "charlstm", "chat", str(tiny_run), "--length", "1000000"])
    try:
        assert b"/help for commands" in _read_until(fd, b"> ")
        os.write(fd, b"/top 2\r")
        assert b"> " in _read_until(fd, b"> ")
        os.write(fd, b"The \r")
        replying, deadline = b"", time.time() + 60
        while len(replying) < 100 and time.time() < deadline:  # a reply of a million characters is under way
            replying += _read_until(fd, b"\x00", timeout=0.5)
        assert len(replying) >= 100, replying
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT
        shown = b""
        deadline = time.time() + 60
        while not shown.endswith(b"\r\n> ") and time.time() < deadline:  # the reply may hold "> " itself
            shown += _read_until_quiet(fd, quiet=2.0, timeout=10)
        assert shown.endswith(b"\r\n> ")  # back at the prompt (however slowly)
        assert _read_until_quiet(fd) == b""  # and the reply stopped: nothing comes after the prompt
        os.write(fd, b"\x04")  # Ctrl-D: leave
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.close(fd)


def test_ctrl_c_during_a_reply_is_seen_even_when_python_swallows_the_interrupt():
    """The reply loop checks ``pressed`` after each piece: an interrupt raised inside a finaliser
    (which Python prints and drops) must still stop the reply. The handler is put back after."""
    from charlstm.cli.chat import _CtrlC

    before = signal.getsignal(signal.SIGINT)
    with _CtrlC() as ctrl_c:
        assert not ctrl_c.pressed
        try:
            signal.raise_signal(signal.SIGINT)  # as a finaliser would see it: raised, then dropped
        except KeyboardInterrupt:
            pass
        assert ctrl_c.pressed
    assert signal.getsignal(signal.SIGINT) is before
