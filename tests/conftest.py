import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from charlstm.data.text import builtin_text

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TINY_MODEL = [
    "--embedding-dim",
    "16",
    "--hidden-size",
    "32",
    "--num-layers",
    "1",
    "--batch-size",
    "4",
    "--bptt",
    "16",
]


def run_cli(*args, input=None, env=None, cwd=None) -> subprocess.CompletedProcess:
    """``charlstm ARGS`` run in this process through Click's ``CliRunner``, answered as
    ``subprocess.run(..., capture_output=True, text=True)`` answers: ``returncode``, ``stdout``
    and ``stderr`` (separate streams). The group's standalone ``main`` runs, as in the real
    command, so errors are the same one line on stderr with the same exit codes; an exception
    that escapes it fails the test (the real command would print a traceback). ``env`` adds to
    or overrides this process's environment for the call; ``cwd`` is the working directory.
    Use :func:`run_process` where the test is about the real process (signals, pipes, limits)."""
    from click.testing import CliRunner

    from charlstm.cli import cli

    argv = [str(a) for a in args]
    saved_argv = sys.argv
    sys.argv = ["charlstm", *argv]  # train records the command line as typed
    try:
        with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
            result = CliRunner().invoke(cli, argv, input=input, env=env, prog_name="charlstm", catch_exceptions=False)
    finally:
        sys.argv = saved_argv
    return subprocess.CompletedProcess(["charlstm", *argv], result.exit_code, result.stdout, result.stderr)


def run_process(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """The real command, as a user runs it: ``python -m charlstm ARGS`` in a new process."""
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs
    )


@pytest.fixture(scope="session")
def small_text() -> str:
    """About 20 KB of English prose that every Python install carries."""
    return builtin_text()[:20_000]


@pytest.fixture
def text_file(tmp_path, small_text) -> Path:
    path = tmp_path / "small.txt"
    path.write_text(small_text, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_text):
    """A tiny model trained for a few steps; returns its run directory."""
    from charlstm.config import ModelShape, TrainConfig
    from charlstm.data.text import TextSource
    from charlstm.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "tiny"
    config = TrainConfig(batch_size=4, bptt=16, max_steps=20, eval_every=10, device="cpu", seed=1)
    shape = ModelShape(embedding_dim=16, hidden_size=32, num_layers=1)
    result = train(TextSource.from_text(small_text, "small", "small"), config, shape, out=out)
    return result.run_dir


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is not here (it is not part of the project)")
    return path


@pytest.fixture(autouse=True)
def _auto_sizes_an_lstm(request, monkeypatch):
    """``--size auto`` picks the LN-LSTM where its C++ recurrence builds: in-process tests get the
    LSTM either way, so what they assert does not depend on the machine having a compiler; tests
    marked ``auto_cell`` see the real choice."""
    if request.node.get_closest_marker("auto_cell") is None:
        monkeypatch.setattr("charlstm.training.setup.auto_cell", lambda device: "lstm")


def pytest_runtest_setup(item):
    """Tests marked ``cuda`` run only where torch sees a CUDA GPU (benchmarks/gpu_check.py)."""
    if item.get_closest_marker("cuda") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")


@contextlib.contextmanager
def headless_chromium(tmp_path, window: str = "1100,700"):
    """Debian's chromium under selenium, headless with a fresh profile (the test skips without
    them); quits at the end."""
    import shutil

    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("chromium and chromedriver are not installed (Debian: apt install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--window-size={window}"]
    for flag in [*flags, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        browser.set_page_load_timeout(20)
        yield browser
    finally:
        browser.quit()
