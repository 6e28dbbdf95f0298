"""Constrained output (--regex, --json-schema, response_format) and --logit-bias: every finished
sample matches, over many seeds, on char, byte and SentencePiece vocabularies; what the
vocabulary cannot write is one clear line before anything runs; a constrained request shares
the server's batch with others."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

import charlstm
from charlstm.errors import ConfigError

pytest.importorskip("outlines_core")
DATA = Path(__file__).resolve().parent / "data"


def _script():
    spec = importlib.util.spec_from_file_location("make_pinned_texts", DATA / "make_pinned_texts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny untrained models: a char vocabulary of letters and punctuation, bytes, SentencePiece."""
    script, directory = _script(), tmp_path_factory.mktemp("constrained")
    return {name: script.save_run(name, directory) for name in ("char-lstm", "byte-lstm", "bpe-lstm")}


NAME = r"[A-Z][a-z]{1,8} [A-Z][a-z]{1,8}"
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize("model", ["char-lstm", "byte-lstm", "bpe-lstm"])
def test_every_finished_sample_matches_the_pattern(runs, model):
    lm = charlstm.load(runs[model], device="cpu")
    finished = 0
    for seed in range(25):
        sample = lm.generate("Name: ", length=40, regex=NAME, seed=seed, temperature=1.0, details=True)
        if sample.finish_reason == "stop":
            finished += 1
            assert re.fullmatch(NAME, sample.text), (seed, sample.text)
        else:  # cut by its length: it says so, and is a beginning of a match
            assert sample.finish_reason == "length"
    assert finished >= 20


@pytest.mark.parametrize("model", ["byte-lstm", "bpe-lstm"])
def test_every_finished_sample_is_valid_json_of_the_schema(runs, model):
    jsonschema = pytest.importorskip("jsonschema")
    lm = charlstm.load(runs[model], device="cpu")
    finished = 0
    for seed in range(12):
        sample = lm.generate("", length=300, json_schema=PERSON, seed=seed, temperature=0.8, details=True)
        if sample.finish_reason == "stop":
            finished += 1
            jsonschema.validate(json.loads(sample.text), PERSON)
    assert finished >= 8


def test_rows_of_one_request_end_where_each_matches(runs):
    """The first letter each row draws (among the four the pattern allows) fixes its length."""
    lm = charlstm.load(runs["byte-lstm"], device="cpu")
    pattern = "(a|bb|ccc|dddd)"
    samples = lm.generate("", length=30, regex=pattern, num_samples=8, seed=3, details=True, temperature=3.0)
    assert all(re.fullmatch(pattern, s.text) and s.finish_reason == "stop" for s in samples)
    assert len({len(s.text) for s in samples}) > 1  # they ended at different tokens
    assert [s.tokens for s in samples] == [len(s.text) for s in samples]


def test_a_pattern_the_vocabulary_cannot_write_is_one_line_before_anything_runs(runs):
    lm = charlstm.load(runs["char-lstm"], device="cpu")  # no digits, no braces
    with pytest.raises(ConfigError, match="lacks characters the pattern needs"):
        lm.generate("x", regex="[0-9]+")
    with pytest.raises(ConfigError, match="lacks characters"):
        lm.stream("x", json_schema=PERSON)  # checked when asked, not when read
    with pytest.raises(ConfigError, match="not one charlstm can follow"):
        lm.generate("x", regex="[a-")
    with pytest.raises(ConfigError, match="--json-schema does not combine with --regex"):
        lm.generate("x", regex="a", json_schema=PERSON)
    bounded = {"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}}
    with pytest.raises(ConfigError, match="minimum"):  # the pattern could not keep it: refused, not ignored
        charlstm.load(runs["byte-lstm"], device="cpu").generate("x", json_schema=bounded)


def test_the_cli_writes_only_matching_text_and_refuses_in_one_line(runs, tmp_path):
    from tests.conftest import run_cli

    done = run_cli("sample", runs["byte-lstm"], "--regex", "[a-z]{3,5}!", "--num-samples", "4", "--seed", "1",
                   "--no-echo-prime", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    samples = done.stdout.rstrip("\n").split("\n\n")
    assert len(samples) == 4 and all(re.fullmatch("[a-z]{3,5}!", sample) for sample in samples)
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps(PERSON))
    done = run_cli("sample", runs["byte-lstm"], "--json-schema", schema, "--seed", "2", "--length", "150",
                   "--device", "cpu", "--json")
    record = json.loads(done.stdout)
    assert done.returncode == 0 and record["finish_reason"] == "stop" and set(json.loads(record["text"])) == {"name", "age"}
    refused = run_cli("sample", runs["char-lstm"], "--regex", "[0-9]+", "--device", "cpu")
    assert refused.returncode != 0 and refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1
    missing = run_cli("sample", runs["char-lstm"], "--json-schema", tmp_path / "nope.json", "--device", "cpu")
    assert missing.returncode == 1 and "nope.json" in missing.stderr
    bad_bias = run_cli("sample", runs["char-lstm"], "--logit-bias", "3:1", "--device", "cpu")
    assert bad_bias.returncode == 2 and "ID=BIAS" in bad_bias.stderr


def test_logit_bias_bans_and_forces_tokens(runs):
    lm = charlstm.load(runs["char-lstm"], device="cpu")
    e = lm.tokenizer.encode("e").tolist()[0]
    texts = [lm.generate("The ", length=60, seed=s, temperature=1.2) for s in range(5)]
    banned = [lm.generate("The ", length=60, seed=s, temperature=1.2, logit_bias={e: -100}) for s in range(5)]
    assert any("e" in t for t in texts) and not any("e" in t for t in banned)
    assert lm.generate("The ", length=20, seed=1, logit_bias={e: 100}) == "e" * 20
    with pytest.raises(ConfigError, match="--logit-bias: token 9999 is not in the model's vocabulary"):
        lm.generate("x", logit_bias={9999: 1.0})
    with pytest.raises(ConfigError, match="--logit-bias must map token ids"):
        lm.generate("x", logit_bias={e: 500})


@pytest.fixture(scope="module")
def served(runs):
    pytest.importorskip("starlette")
    pytest.importorskip("httpx")
    from starlette.testclient import TestClient

    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served

    with TestClient(Server([load_served(runs["byte-lstm"], "cpu")]).app) as client:
        for _ in range(200):
            if client.get("/health").status_code == 200:
                break
        yield client


def test_served_response_format_and_regex_share_the_batch(served, runs):
    """Constrained and unconstrained requests at once: each writes what Model.generate writes
    for its seed, and the constrained ones match."""
    import concurrent.futures

    jsonschema = pytest.importorskip("jsonschema")
    lm = charlstm.load(runs["byte-lstm"], device="cpu")
    schema_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    asks = [
        {"prompt": "", "max_tokens": 150, "temperature": 0.8, "seed": 4, "response_format": schema_format},
        {"prompt": "id ", "max_tokens": 20, "temperature": 1.0, "seed": 5, "regex": "[0-9]{2,4}-[a-z]{2}"},
        {"prompt": "The ", "max_tokens": 60, "temperature": 1.0, "seed": 6},
        {"prompt": "", "max_tokens": 120, "temperature": 0.8, "seed": 7, "response_format": {"type": "json_object"}},
    ]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda ask: served.post("/v1/completions", json=ask).json(), asks))
    person, code, plain, anything = (a["choices"][0] for a in answers)
    assert person["finish_reason"] == "stop"
    jsonschema.validate(json.loads(person["text"]), PERSON)
    assert person["text"] == lm.generate("", length=150, temperature=0.8, seed=4, json_schema=PERSON)
    assert re.fullmatch("[0-9]{2,4}-[a-z]{2}", code["text"])
    assert plain["text"] == lm.generate("The ", length=60, temperature=1.0, seed=6)
    if anything["finish_reason"] == "stop":
        assert isinstance(json.loads(anything["text"]), dict)


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "a", "regex": "[a-"}, "regex"),
        ({"prompt": "a", "regex": ""}, "regex"),
        ({"prompt": "a", "response_format": {"type": "xml"}}, "response_format"),
        ({"prompt": "a", "response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "response_format"),
        ({"prompt": "a", "logit_bias": {"a": 1}}, "logit_bias"),
        ({"prompt": "a", "logit_bias": {"3": 101}}, "logit_bias"),
        ({"prompt": "a", "logit_bias": {"999": 1}}, "logit_bias"),
    ],
)
def test_served_refusals_name_the_field(served, body, param):
    response = served.post("/v1/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_served_logit_bias_as_openai_sends_it(served, runs):
    lm = charlstm.load(runs["byte-lstm"], device="cpu")
    e = lm.tokenizer.encode("e").tolist()[0]
    body = served.post("/v1/completions", json={"prompt": "The ", "max_tokens": 40, "seed": 3, "logit_bias": {str(e): -100}}).json()
    assert "e" not in body["choices"][0]["text"]
    assert body["choices"][0]["text"] == lm.generate("The ", length=40, temperature=1.0, seed=3, logit_bias={e: -100})


@pytest.mark.slow
def test_the_playgrounds_pattern_box_in_headless_chromium(runs, tmp_path):
    """A pattern typed in the page's box: the text written matches it, and the status says why
    it ended ("done (stop)")."""
    pytest.importorskip("starlette")
    pytest.importorskip("selenium")
    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served
    from tests.conftest import headless_chromium
    from tests.test_serve import _listening

    with _listening(Server([load_served(runs["byte-lstm"], "cpu")])) as url, headless_chromium(tmp_path) as browser:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda b: b.find_element(By.ID, "model").text.startswith("byte-lstm"))
        browser.find_element(By.ID, "prompt").clear()
        browser.find_element(By.ID, "prompt").send_keys("Name: ")
        browser.find_element(By.ID, "regex").send_keys("[A-Z][a-z]{2,6} [A-Z][a-z]{2,6}!")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("done"))
        assert browser.find_element(By.ID, "status").text.startswith("done (stop)")
        written = browser.find_element(By.ID, "output").text.removeprefix("Name: ")
        assert re.fullmatch("[A-Z][a-z]{2,6} [A-Z][a-z]{2,6}!", written), written
