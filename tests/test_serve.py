"""``charlstm serve``: every endpoint and every refusal in-process, then real sockets on
127.0.0.1 with clients nobody here wrote (openai, httpx, schemathesis, headless Chromium)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from charlstm.stepper import TokenStepper  # noqa: E402
from charlstm.serving.app import Server  # noqa: E402
from charlstm.serving.batcher import Batcher, StopText  # noqa: E402
from charlstm.serving.models import ServedModel, load_served  # noqa: E402
from charlstm.serving.requests import Limits  # noqa: E402
from tests.conftest import run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class SlowStepper:
    """The real stepper, ``seconds`` slower per step: a generation that lasts while a test acts."""

    def __init__(self, stepper, seconds: float):
        self.stepper, self.seconds = stepper, seconds

    def __call__(self, ids, hidden):
        time.sleep(self.seconds)
        return self.stepper(ids, hidden)


def _served(run, slow: float = 0.0) -> ServedModel:
    model = load_served(run, "cpu")
    if slow:
        model.stepper = SlowStepper(TokenStepper(model.module), slow)
    return model


def _ready(client) -> None:
    for _ in range(200):
        if client.get("/health").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("the server never became ready")


@contextlib.contextmanager
def _client(run, slow: float = 0.0, **options):
    limits = options.pop("limits", Limits())
    server = Server([_served(run, slow)], limits, **options)
    with TestClient(server.app) as client:
        _ready(client)
        yield client


@pytest.fixture(scope="module")
def client(tiny_run):
    with _client(tiny_run) as c:
        yield c


def _greedy_cli(run, prompt: str, length: int) -> str:
    """What ``charlstm sample --temperature 0`` writes for ``prompt`` (its --json record's text)."""
    result = run_cli("sample", run, "--temperature", "0", "--prime", prompt, "--length", length, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["text"]


def _sse(body: str) -> list:
    """The data of each server-sent event; the last must be [DONE]."""
    events = [block[len("data: "):] for block in body.split("\n\n") if block.strip()]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _metric(text: str, name: str, **labels) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + ("{" + wanted + "}" if wanted else " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ------------------------------------------------------------------------------- in-process


def test_health_and_models_describe_the_run(client, tiny_run):
    assert client.get("/health").json() == {"status": "ok", "models": ["tiny"]}
    (model,) = client.get("/v1/models").json()["data"]
    assert model["id"] == "tiny" and model["object"] == "model"
    assert model["tokenizer"] == "char" and model["architecture"] == "lstm 1x32"
    assert model["parameters"] > 0 and model["vocab_size"] > 10
    assert model["validation_loss"] is None or model["validation_loss"] > 0
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"


def test_greedy_completion_is_what_charlstm_sample_writes(client, tiny_run):
    expected = _greedy_cli(tiny_run, "The ", 40)
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": "The ", "max_tokens": 40, "temperature": 0}).json()
    (choice,) = body["choices"]
    assert choice["text"] == expected
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 40, "total_tokens": 44}
    assert body["object"] == "text_completion" and isinstance(body["seed"], int)


def test_int8_weights_serve_what_sample_writes_with_them(tiny_run):
    """``serve --weights int8`` steps with the lighter weights: a seeded request writes what
    ``charlstm sample --weights int8`` writes for the same seed, and /v1/models says so."""
    expected = run_cli("sample", tiny_run, "--weights", "int8", "--temperature", "0", "--prime", "The ",
                       "--length", "30", "--device", "cpu", "--json")
    assert expected.returncode == 0, expected.stderr
    server = Server([load_served(tiny_run, "cpu", weights="int8")], Limits())
    with TestClient(server.app) as client:
        _ready(client)
        assert client.get("/v1/models").json()["data"][0]["weights"] == "int8"
        body = client.post("/v1/completions", json={"prompt": "The ", "max_tokens": 30, "temperature": 0}).json()
    assert body["choices"][0]["text"] == json.loads(expected.stdout)["text"]


def test_a_seed_reproduces_and_each_choice_gets_the_next_seed(client):
    ask = {"prompt": "a", "max_tokens": 30, "temperature": 1.0, "top_k": 20, "top_p": 0.95, "min_p": 0.01}
    two = client.post("/v1/completions", json={**ask, "seed": 7, "n": 2}).json()
    assert two["seed"] == 7
    again = client.post("/v1/completions", json={**ask, "seed": 7}).json()
    second = client.post("/v1/completions", json={**ask, "seed": 8}).json()
    assert again["choices"][0]["text"] == two["choices"][0]["text"]
    assert second["choices"][0]["text"] == two["choices"][1]["text"]
    unseeded = client.post("/v1/completions", json=ask).json()
    replay = client.post("/v1/completions", json={**ask, "seed": unseeded["seed"]}).json()
    assert replay["choices"][0]["text"] == unseeded["choices"][0]["text"]


def test_stream_sends_the_same_text_then_usage_then_done(client, tiny_run):
    ask = {"prompt": "The ", "max_tokens": 25, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/completions", json=ask) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(response.read().decode())
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == _greedy_cli(tiny_run, "The ", 25)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 25


def test_logprobs_activations_and_echo(client):
    body = client.post(
        "/v1/completions",
        json={"prompt": "ab", "max_tokens": 6, "temperature": 0, "logprobs": 3, "echo": True, "activation": {"layer": 0, "unit": 5}},
    ).json()
    (choice,) = body["choices"]
    assert choice["text"].startswith("ab") and len(choice["text"]) == 8
    lp = choice["logprobs"]
    # echo: the prompt's tokens come first (the first without a log-probability, as OpenAI's),
    # then the 6 generated ones.
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert len(lp["token_logprobs"]) == 8 and all(v <= 0 for v in lp["token_logprobs"][1:])
    assert all(len(top) == 3 for top in lp["top_logprobs"][1:])
    # Greedy: the chosen token is the most likely, so its log-probability is the top one.
    assert all(math.isclose(v, max(top.values())) for v, top in zip(lp["token_logprobs"][2:], lp["top_logprobs"][2:]))
    assert lp["text_offset"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert len(choice["activations"]) == 6 and all(isinstance(a, float) for a in choice["activations"])


def test_stop_strings_end_the_text_before_them(client):
    full = client.post("/v1/completions", json={"prompt": "The ", "max_tokens": 60, "temperature": 0}).json()["choices"][0]["text"]
    stop = full[20:23]
    cut = full[: full.index(stop)]
    body = client.post("/v1/completions", json={"prompt": "The ", "max_tokens": 60, "temperature": 0, "stop": ["zzzz", stop]}).json()
    assert body["choices"][0] == {"index": 0, "text": cut, "logprobs": None, "finish_reason": "stop"}


def test_stop_text_holds_back_what_may_start_a_stop_string():
    text = StopText(("END", "xy"))
    assert [text.feed(c.encode()) for c in "abEN"] == ["a", "b", "", ""]
    assert text.feed(b"d") == "ENd"  # not END after all: released
    assert text.feed(b"x") == "" and text.feed(b"y") == "" and text.done


def test_score_lines_as_charlstm_score(client, tiny_run):
    body = client.post("/v1/score", json={"input": ["hello there", ""]}).json()
    first, empty = body["data"]
    result = run_cli("score", tiny_run, "--json", "--device", "cpu", input="hello there\n")
    expected = json.loads(result.stdout.splitlines()[0]) if result.stdout.lstrip().startswith("{") else json.loads(result.stdout)[0]
    assert first["tokens"] == 11 and first["chars"] == 11
    assert math.isclose(first["logprob"], expected["logprob"], rel_tol=1e-5)
    assert math.isclose(first["bits_per_char"], -first["logprob"] / math.log(2) / 11)
    assert empty == {"index": 1, "text": "", "tokens": 0, "chars": 0, "logprob": 0.0, "bits_per_char": None}


@pytest.mark.parametrize(
    "body, status, param, message",
    [
        ({"prompt": "a", "n": 9}, 400, "n", "n: must be from 1 to 8 (got 9)"),
        ({"prompt": "a", "max_tokens": 4097}, 400, "max_tokens", "max_tokens: must be from 0 to 4096 (got 4097)"),
        ({"prompt": "a" * 32_769}, 400, "prompt", "prompt: is 32,769 characters; the limit is 32,768"),
        ({"prompt": "a", "stop": ["1", "2", "3", "4", "5"]}, 400, "stop", "stop: has 5 strings; the limit is 4"),
        ({"prompt": "a", "temperature": "hot"}, 400, "temperature", "temperature: must be a number (got 'hot')"),
        ({"prompt": "a", "top_p": 0}, 400, "top_p", "top_p: must be in (0.0, 1.0] (got 0)"),
        ({"prompt": "a", "max_tokens": True}, 400, "max_tokens", "max_tokens: must be a whole number (got True)"),
        ({"prompt": "a", "colour": 1}, 400, "colour", "colour: unknown field"),
        ({"prompt": ["a", 3]}, 400, "prompt", None),
        ({"prompt": "a", "frequency_penalty": 0.5}, 400, "frequency_penalty", None),
        ({"prompt": "a", "activation": {"layer": 3, "unit": 0}}, 400, "activation", None),
        ({"prompt": "\u20ac"}, 400, "prompt", None),
        ({"prompt": "a", "model": "nope"}, 404, "model", None),
        ([1, 2], 400, None, "the body must be a JSON object"),
    ],
)
def test_refusals_name_the_field_in_openais_shape(client, body, status, param, message):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    if message is not None:
        assert error["message"] == message


def test_bad_json_and_large_bodies(client):
    bad = client.post("/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = client.post("/v1/completions", content=b"x" * ((1 << 20) + 1))
    assert big.status_code == 413 and big.json()["error"]["message"] == "the body is over 1,048,576 bytes"

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(17):
            yield b" " * 65536

    chunked = client.post("/v1/completions", content=chunks())
    assert chunked.status_code == 413
    assert client.get("/v1/nothing").json()["error"]["message"] == "no such endpoint: GET /v1/nothing"
    assert client.get("/v1/completions").status_code == 405


def test_api_key_guards_all_but_the_page_and_health(tiny_run):
    with _client(tiny_run, api_key="s3cret") as client:
        refused = client.post("/v1/completions", json={"prompt": "a"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200 and client.get("/").status_code == 200


def test_a_full_queue_answers_503_with_retry_after(tiny_run):
    limits = Limits(max_batch=1, max_queue=0)
    with _client(tiny_run, slow=0.005, limits=limits) as client:
        with client.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 4000, "stream": True}) as first:
            lines = first.iter_lines()  # kept: a dropped iterator closes the stream
            next(lines)  # it runs
            busy = client.post("/v1/completions", json={"prompt": "a"})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["type"] == "server_error"


def test_a_generation_over_its_time_limit_says_so(tiny_run):
    with _client(tiny_run, slow=0.005, limits=Limits(time_limit=0.1)) as client:
        body = client.post("/v1/completions", json={"prompt": "a", "max_tokens": 4000}).json()
    assert body["choices"][0]["finish_reason"] == "time_limit"
    assert 0 < body["usage"]["completion_tokens"] < 4000


def test_health_is_503_until_the_models_are_loaded(tiny_run):
    loaded = threading.Event()

    def load():
        loaded.wait(10)
        return [_served(tiny_run)]

    with TestClient(Server(load).app) as client:
        assert client.get("/health").status_code == 503
        assert client.post("/v1/completions", json={"prompt": "a"}).status_code == 503
        loaded.set()
        _ready(client)


def test_page_is_served_whole_by_the_server(client):
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/page.js")
    for text in (page.text, script.text):
        assert not re.search(r"(src|href)=\"https?:", text) and "//cdn" not in text
    assert 'id="generate"' in page.text and 'id="stop"' in page.text and "/v1/completions" in script.text


def test_cors_is_off_unless_an_origin_is_given(client, tiny_run):
    asked = {"Origin": "http://example.test"}
    assert "access-control-allow-origin" not in client.get("/v1/models", headers=asked).headers
    with _client(tiny_run, cors_origins=["http://example.test"]) as open_client:
        headers = open_client.get("/v1/models", headers=asked).headers
        assert headers["access-control-allow-origin"] == "http://example.test"


def test_metrics_count_requests_tokens_and_latency(client):
    client.post("/v1/completions", json={"prompt": "a", "max_tokens": 10})
    client.post("/v1/completions", json={"prompt": "a", "n": 99})
    text = client.get("/metrics").text
    assert _metric(text, "charlstm_requests_total", path="/v1/completions", status="400") >= 1
    assert _metric(text, "charlstm_tokens_generated_total", model="tiny") >= 10
    for name in ("charlstm_queue_depth", "charlstm_running", "charlstm_time_to_first_token_seconds_bucket",
                 "charlstm_token_latency_seconds_bucket"):
        assert name in text


def test_every_request_is_one_log_line(client, caplog):
    with caplog.at_level("INFO", logger="charlstm.serve"):
        client.post("/v1/completions", json={"prompt": "a", "max_tokens": 7})
        client.post("/v1/completions", json={"prompt": "a", "n": 0})
    lines = [r.getMessage() for r in caplog.records if r.name == "charlstm.serve"]
    assert re.fullmatch(r"POST /v1/completions 200 7 tokens \d+\.\d{3} s", lines[0])
    assert re.fullmatch(r"POST /v1/completions 400 0 tokens \d+\.\d{3} s", lines[1])
    assert not any(r.exc_info for r in caplog.records)


def test_cli_refuses_an_open_address_without_a_key(tiny_run):
    result = run_cli("serve", tiny_run, "--host", "0.0.0.0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: --host 0.0.0.0 is not a loopback address: set --api-key (or CHARLSTM_API_KEY) so only "
        "clients with the key are answered"
    )


def test_cli_without_the_extra_says_what_to_install(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    result = run_cli("serve", tiny_run)
    assert result.returncode == 1
    assert result.stderr.strip() == 'Error: charlstm serve needs the web packages: pip install "charlstm[serve]"'


def test_cli_names_a_missing_run(tmp_path):
    result = run_cli("serve", tmp_path / "nothing")
    assert result.returncode == 1 and "no such checkpoint file or run directory" in result.stderr


# ------------------------------------------------------------------------ real sockets


@contextlib.contextmanager
def _listening(server: Server):
    """``server`` under uvicorn on 127.0.0.1, a free port, in a thread; yields its base URL."""
    config = uvicorn.Config(server.app, host="127.0.0.1", port=0, log_config=None, log_level="warning", lifespan="on")
    runner = uvicorn.Server(config)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if runner.started:
                break
            time.sleep(0.01)
        port = runner.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        for _ in range(500):
            if httpx.get(url + "/health").status_code == 200:
                break
            time.sleep(0.01)
        yield url
    finally:
        runner.should_exit = True
        thread.join(15)


def _running(url: str) -> float:
    return _metric(httpx.get(url + "/metrics").text, "charlstm_running")


@pytest.mark.slow
def test_real_process_with_the_openai_client_and_sigterm(tiny_run):
    openai = pytest.importorskip("openai")
    process = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "serve", str(tiny_run), "--port", "0", "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "CHARLSTM_API_KEY": "k"},
    )
    try:
        url = None
        lines = []
        for _ in range(200):
            line = process.stderr.readline()
            lines.append(line)
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "".join(lines)
        for _ in range(500):
            if httpx.get(url + "/health").status_code == 200:
                break
            time.sleep(0.02)
        client = openai.OpenAI(base_url=url + "/v1", api_key="k")
        plain = client.completions.create(model="tiny", prompt="The ", max_tokens=30, temperature=0)
        assert plain.choices[0].text == _greedy_cli(tiny_run, "The ", 30)
        assert plain.usage.completion_tokens == 30
        streamed = client.completions.create(model="tiny", prompt="The ", max_tokens=30, temperature=0, stream=True)
        assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()

        # SIGTERM while a stream runs: it still ends whole, then the process exits 0.
        with httpx.stream("POST", url + "/v1/completions", headers={"Authorization": "Bearer k"},
                          json={"prompt": "a", "max_tokens": 1000, "stream": True}, timeout=30) as response:
            lines_read = response.iter_lines()
            next(lines_read)
            process.send_signal(signal.SIGTERM)
            rest = [line for line in lines_read if line]
        assert rest[-1] == "data: [DONE]" and '"finish_reason": "length"' in rest[-2]
        assert process.wait(timeout=20) == 0
        log = process.stderr.read()
        assert "Traceback" not in log and "stopping: no new requests" in log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_openai_client_retries_a_503_and_a_disconnect_frees_the_slot(tiny_run):
    openai = pytest.importorskip("openai")
    server = Server([_served(tiny_run, slow=0.005)], Limits(max_batch=1, max_queue=0))
    with _listening(server) as url:
        holding = threading.Event()
        release = threading.Event()

        def hold_the_only_slot():
            with httpx.stream("POST", url + "/v1/completions", json={"prompt": "a", "max_tokens": 4096, "stream": True}) as r:
                lines = r.iter_lines()  # kept: a dropped iterator closes the stream
                next(lines)
                holding.set()
                release.wait(20)  # then leave mid-stream: the server must free the slot

        holder = threading.Thread(target=hold_the_only_slot)
        holder.start()
        assert holding.wait(20)

        def leave_after_the_first_503():
            for _ in range(2000):
                if _metric(httpx.get(url + "/metrics").text, "charlstm_requests_total", path="/v1/completions", status="503"):
                    break
                time.sleep(0.005)
            release.set()

        threading.Thread(target=leave_after_the_first_503).start()
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=5)
        started = time.perf_counter()
        done = client.completions.create(model="tiny", prompt="a", max_tokens=5, temperature=0)
        holder.join(20)
        assert done.choices[0].finish_reason == "length"
        assert time.perf_counter() - started < 15  # the held generation (4096 slow steps) did not run out
        metrics = httpx.get(url + "/metrics").text
        assert _metric(metrics, "charlstm_requests_total", path="/v1/completions", status="503") >= 1
        assert _running(url) == 0


def test_the_queue_is_counted_safely_while_the_worker_pops_it():
    """The event loop counts the queue (admission, the depth gauge) while the worker thread takes
    from it: counting must not fail with "deque mutated during iteration"."""
    batcher = Batcher(Limits())
    stop = threading.Event()

    def worker():  # what the worker thread does to the queue, under its lock, as fast as it can
        while not stop.is_set():
            with batcher._lock:
                batcher._waiting.extend(object() for _ in range(64))
            for _ in range(64):
                with batcher._lock:
                    batcher._waiting.popleft()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        for _ in range(20_000):
            assert batcher.waiting == 0  # the stand-ins are not Choices
    finally:
        stop.set()
        thread.join()


def test_load_many_clients_greedy_streams_equal_charlstm_sample(tiny_run):
    """16 clients x 5 streamed greedy requests on loopback, all sharing the batch."""
    prompts = ["The ", "and ", "It was", "\n"]
    length = 40
    expected = {p: _greedy_cli(tiny_run, p, length) for p in prompts}
    server = Server([_served(tiny_run)], Limits(max_queue=16))
    results, statuses, latencies = [], [], []
    lock = threading.Lock()
    with _listening(server) as url:

        def client_thread(k: int):
            with httpx.Client(base_url=url, timeout=30) as http:
                for r in range(5):
                    prompt = prompts[(k + r) % len(prompts)]
                    for _attempt in range(50):
                        started = time.perf_counter()
                        with http.stream("POST", "/v1/completions", json={"prompt": prompt, "max_tokens": length, "temperature": 0, "stream": True}) as response:
                            body = response.read().decode()
                        with lock:
                            statuses.append(response.status_code)
                        if response.status_code == 503:
                            assert response.headers["retry-after"] == "1"
                            time.sleep(0.05)
                            continue
                        break
                    text = "".join(c["choices"][0]["text"] for c in _sse(body) if c["choices"])
                    with lock:
                        results.append((prompt, text))
                        latencies.append(time.perf_counter() - started)

        threads = [threading.Thread(target=client_thread, args=(k,)) for k in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert len(results) == 80
    assert set(statuses) <= {200, 503}
    assert [(p, t) for p, t in results if t != expected[p]] == []


def schemathesis_run(server: Server, client, max_examples: int) -> dict[str, int]:
    """Examples schemathesis generated from the server's own OpenAPI schema per operation, each
    sent through ``client``; fails on any 5xx. benchmarks/bench_serve.py --schemathesis N runs it longer."""
    import hypothesis
    import schemathesis
    from schemathesis.core import NOT_SET

    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    counts = {}
    operations = [("/v1/completions", "POST"), ("/v1/chat/completions", "POST"), ("/v1/score", "POST"), ("/tokenize", "POST"),
                  ("/detokenize", "POST"), ("/tokenizer_info", "GET"), ("/v1/models", "GET"), ("/health", "GET")]
    for path, method in operations:
        seen = []

        @hypothesis.settings(
            max_examples=max_examples, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck)
        )
        @hypothesis.given(case=schema[path][method].as_strategy())
        def check(case):
            body = None if case.body is NOT_SET else case.body
            response = client.request(case.method, case.formatted_path, json=body, headers=case.headers or {})
            seen.append(response.status_code)
            assert response.status_code < 500, (body, response.text)

        check()
        counts[f"{method} {path}"] = len(seen)
    return counts


def test_schemathesis_finds_no_server_error(tiny_run):
    pytest.importorskip("schemathesis")
    server = Server([_served(tiny_run)], Limits(max_tokens=16, max_prompt_chars=200, max_n=2))
    with TestClient(server.app) as client:
        _ready(client)
        counts = schemathesis_run(server, client, max_examples=20)
    assert counts["POST /v1/completions"] >= 10 and counts["POST /v1/score"] >= 10


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1100,700"]


@pytest.mark.slow
def test_playground_in_headless_chromium(tiny_run, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("chromium and chromedriver are not installed (Debian: apt install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    server = Server([_served(tiny_run, slow=0.004)])
    with _listening(server) as url:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in [*CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            browser.set_page_load_timeout(20)
            browser.get(url + "/")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda b: b.find_element(By.ID, "model").text.startswith("tiny"))
            prompt = browser.find_element(By.ID, "prompt")
            prompt.clear()
            prompt.send_keys("The ")
            Select(browser.find_element(By.ID, "colour")).select_by_value("probability")
            browser.find_element(By.ID, "length").clear()
            browser.find_element(By.ID, "length").send_keys("3000")
            browser.find_element(By.ID, "generate").click()
            wait.until(lambda b: len(b.find_element(By.ID, "output").text) > 60)
            coloured = browser.find_elements(By.CSS_SELECTOR, "#output span[title^='p = ']")
            assert coloured and coloured[0].get_attribute("style").startswith("background")
            assert "chars/s" in browser.find_element(By.ID, "status").text
            if os.environ.get("CHARLSTM_SCREENSHOT"):
                browser.save_screenshot(str(ROOT / "docs" / "serve_page.png"))
            browser.find_element(By.ID, "stop").click()
            wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("stopped"))
            assert browser.find_element(By.ID, "generate").is_enabled()
            for _ in range(200):  # the page's Stop closed the stream: the server frees the slot
                if _running(url) == 0:
                    break
                time.sleep(0.02)
            assert _running(url) == 0
        finally:
            browser.quit()
