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
