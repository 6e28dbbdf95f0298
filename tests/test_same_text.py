"""The texts charlstm writes, pinned: every case of ``tests/data/pinned_texts.json`` is written
again by the code under test, on every path that wrote it (``Model.generate``, its details,
``Model.stream``, ``charlstm sample --json``, ``Model.session`` replies, ``charlstm chat``, the
server's ``/v1/completions``), and must come out the same: texts exactly, mean log-probabilities
and scores within 1e-5.

The models are tiny and built without training (``tests/data/make_pinned_texts.py`` builds them,
writes the JSON, and says what each path is given). The JSON records what each path wrote when
it was made, including where the paths disagree with each other (the server's n > 1 choices are
seeded seed + j and are not ``sample --num-samples``'s texts): a change to any of it shows here,
on purpose. int8 and bf16 products come from kernels chosen for the CPU's instruction set, so
those cases' pinned values are compared only on a CPU of the capability that wrote them (the
paths must still agree with each other everywhere). A change
that is meant to change a text regenerates the file and says so:

    python tests/data/make_pinned_texts.py > tests/data/pinned_texts.json
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"
PINNED = json.loads((DATA / "pinned_texts.json").read_text(encoding="utf-8"))
CASES = {case["id"]: case for case in PINNED["cases"]}
SERVED = [case_id for case_id, case in CASES.items() if case.get("server")]


def _load_script():
    spec = importlib.util.spec_from_file_location("make_pinned_texts", DATA / "make_pinned_texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Each pinned model's run directory, built as the script builds it."""
    directory = tmp_path_factory.mktemp("pinned")
    return {model_id: script.save_run(model_id, directory) for model_id in PINNED["models"]}


def _differences(expected, actual, where: str = "") -> list[str]:
    """Where ``actual`` is not ``expected``: strings, whole numbers and structure exactly, floats
    within ``script.TOLERANCE`` (or a relative 1e-7, for sums of a hundred nats)."""
    if isinstance(expected, float) or isinstance(actual, float):
        if (
            isinstance(expected, (int, float))
            and isinstance(actual, (int, float))
            and not isinstance(actual, bool)
            and math.isclose(expected, actual, rel_tol=1e-7, abs_tol=script.TOLERANCE)
        ):
            return []
        return [f"{where}: {actual!r}, pinned {expected!r}"]
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{where}: keys {sorted(actual)}, pinned {sorted(expected)}"]
        return [d for key in expected for d in _differences(expected[key], actual[key], f"{where}.{key}")]
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{where}: {len(actual)} items {actual!r}, pinned {len(expected)} {expected!r}"]
        pairs = enumerate(zip(expected, actual))
        return [d for i, (e, a) in pairs for d in _differences(e, a, f"{where}[{i}]")]
    if type(expected) is not type(actual) or expected != actual:
        return [f"{where}: {actual!r}, pinned {expected!r}"]
    return []


def _check(expected, actual, what: str) -> None:
    differences = _differences(expected, actual, what)
    assert not differences, f"{len(differences)} differ from tests/data/pinned_texts.json:\n" + "\n".join(
        differences
    )


def _case(case_id: str) -> dict:
    return {k: v for k, v in CASES[case_id].items() if k not in ("paths", "server_requests")}


def test_the_pinned_file_is_the_scripts():
    """The JSON was written from the cases and models the script holds now (after changing them,
    write the file again)."""
    assert PINNED["models"] == script.MODELS
    assert [_case(case_id) for case_id in CASES] == script.CASES
    assert PINNED["score_lines"] == script.SCORE_LINES and PINNED["score_model"] == script.SCORE_MODEL


@pytest.mark.parametrize("case_id", list(CASES))
def test_same_text(case_id, runs):
    """generate, generate(details=True), stream, sample --json, session replies and chat."""
    case = _case(case_id)
    expected = {k: v for k, v in CASES[case_id]["paths"].items() if k != "server"}
    actual = script.python_paths(case, runs[case["model"]])
    if _kernel_bound(case_id):  # another CPU's int8/bf16 kernels: the paths agree with generate
        assert actual["stream"] == actual["generate"] == actual["cli"][0]["text"] == actual["details"]["text"]
        return
    _check(expected, actual, case_id)


def _kernel_bound(case_id: str) -> bool:
    import torch

    weights = CASES[case_id]["settings"].get("weights", "fp32")
    return weights != "fp32" and torch.backends.cpu.get_cpu_capability() != PINNED.get("cpu_capability")


@pytest.mark.parametrize("case_id", SERVED)
def test_same_server_text(case_id, runs):
    """/v1/completions: each n's choices, their texts and finish reasons."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")  # starlette's TestClient
    case = _case(case_id)
    actual = script.server_paths(case, runs[case["model"]])
    _check(CASES[case_id]["paths"]["server"], actual, f"{case_id}.server")


def test_same_scores(runs):
    """Model.score of two lines, loaded with fp32 and with int8 weights."""
    _check(PINNED["scores"], script.scores(runs[PINNED["score_model"]]), "scores")


def test_same_server_scores(runs):
    """/v1/score of the same lines on servers started with fp32 and with int8 weights: the
    numbers ``Model.score`` gives for the same weights (the server once scored in fp32 whatever
    its --weights said)."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    _check(PINNED["scores"], script.server_scores(runs[PINNED["score_model"]]), "server_scores")
