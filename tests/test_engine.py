"""The one generation engine: every driver takes every sampling option, the list of files a new
option touches (docs/architecture.md) is the list the code has, and a served row writes the same
text alone or beside others."""

import inspect
import re
from pathlib import Path

import pytest
import torch

from charlstm.config import SampleConfig

ROOT = Path(__file__).resolve().parents[1]
# SampleConfig fields that say how a token is drawn (the rest: what to write, where, how many).
DRAWING = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repetition_window", "no_repeat_ngram")
# SampleConfig fields that say which tokens may be written at all (not chat settings).
SHAPING = ("logit_bias", "regex", "json_schema")


def _listed_files() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Adding a sampling option", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\d+\. `(charlstm/[\w/]+\.py)`", section, flags=re.M)


def test_the_files_a_sampling_option_touches_are_the_ones_the_docs_list():
    listed = _listed_files()
    assert len(listed) == 8 and all((ROOT / f).exists() for f in listed)
    naming = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "charlstm").rglob("*.py")
        if re.search(r"\bmin_p\b", path.read_text(encoding="utf-8"))
    }
    assert naming == set(listed)


def test_every_driver_takes_every_sampling_option():
    import charlstm
    from charlstm.cli import cli
    from charlstm.cli.generation import GENERATION_OPTIONS
    from charlstm.generation.chat import SETTINGS
    from charlstm.serving.requests import SAMPLING_FIELDS

    assert set(DRAWING) <= set(SampleConfig.field_names())
    for method in (charlstm.Model.generate, charlstm.Model.stream, charlstm.Model.session):
        assert set(DRAWING) <= set(inspect.signature(method).parameters), method.__name__
    # sample has --temperature of its own (repeatable)
    assert set(DRAWING) - {"temperature"} <= set(GENERATION_OPTIONS)
    assert {name.replace("_", "-") for name in DRAWING} <= set(SETTINGS)
    assert set(DRAWING) | set(SHAPING) == set(SAMPLING_FIELDS)
    for method in (charlstm.Model.generate, charlstm.Model.stream):
        assert set(SHAPING) <= set(inspect.signature(method).parameters), method.__name__
    sample_flags = {p.name for p in cli.commands["sample"].params}
    assert {"logit_bias", "regex", "json_schema_file"} <= sample_flags


@pytest.fixture(scope="module")
def served(tiny_run):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served

    with TestClient(Server([load_served(tiny_run, "cpu")]).app) as client:
        for _ in range(200):
            if client.get("/health").status_code == 200:
                break
        yield client


@pytest.mark.parametrize("sharing", [1, 16, 64])
def test_a_served_request_writes_what_generate_writes_alone_or_in_a_batch(served, tiny_run, sharing):
    """A seeded request beside ``sharing - 1`` others with other settings and seeds (one
    request with n choices: all admitted together) writes what ``Model.generate`` writes."""
    import charlstm

    lm = charlstm.load(tiny_run, device="cpu")
    ask = {"prompt": "The ", "max_tokens": 40, "temperature": 0.9, "top_k": 12, "repetition_penalty": 1.2, "seed": 11}
    expected = [lm.generate("The ", length=40, temperature=0.9, top_k=12, repetition_penalty=1.2, seed=11 + j) for j in range(min(sharing, 8))]
    import concurrent.futures

    others = {"prompt": "A b", "max_tokens": 60, "temperature": 1.1, "min_p": 0.05, "n": 8}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        crowd = [pool.submit(served.post, "/v1/completions", json={**others, "seed": k}) for k in range((sharing - 1) // 8)]
        mine = served.post("/v1/completions", json={**ask, "n": min(sharing, 8)}).json()
        assert all(f.result().status_code == 200 for f in crowd)
    assert [c["text"] for c in mine["choices"]] == expected


def test_a_row_that_ends_first_keeps_its_state_and_stops_counting(tiny_run):
    """With a stop string, rows of one request end at different tokens: each keeps its state from
    the token that ended it, and its log-probability counts the tokens up to there only."""
    from charlstm.generation.sampling import generate
    from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint

    model, tok = model_from_checkpoint(load_checkpoint(tiny_run))
    config = SampleConfig(prime="The ", length=60, num_samples=4, seed=2, temperature=1.0, stop="e")
    run = generate(model, tok, config, "cpu")
    texts = ["".join(t) for t in zip(*list(run))]
    stopped = [row for row, text in enumerate(texts) if len(text) < 60]
    assert len(stopped) >= 2 and len({len(texts[row]) for row in stopped}) >= 2  # they end at different tokens
    for row in stopped:
        text = texts[row]
        assert run.tokens[row] == len(text) + 1  # the token that held the stop string counts
        with torch.no_grad():
            _, hidden = model(torch.tensor(tok.encode("The " + text + "e")).long().unsqueeze(1))
        assert torch.allclose(run.hidden[0][:, row], hidden[0][:, 0], atol=1e-5)
