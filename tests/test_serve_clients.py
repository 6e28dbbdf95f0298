"""``charlstm serve`` for the clients people already run: vLLM's tokenizer endpoints, token-id
prompts, the prompt's log-probabilities with ``echo``, ``/v1/chat/completions`` and chat
templates, checked in-process and then through the real ``openai`` client and
lm-evaluation-harness (``local-completions``, ``local-chat-completions``) on loopback."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("jinja2")

import httpx  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

import charlstm  # noqa: E402
from charlstm.data.tokenizers import default_start_id  # noqa: E402
from charlstm.generation.template import ChatTemplate  # noqa: E402
from charlstm.serving.app import Server  # noqa: E402
from charlstm.serving.models import load_served  # noqa: E402
from charlstm.serving.requests import Limits  # noqa: E402
from tests.conftest import run_cli  # noqa: E402
from tests.test_serve import _listening, _ready, _sse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _train(out: Path, text: str, tokenizer: str) -> Path:
    from charlstm.config import ModelShape, TrainConfig
    from charlstm.data.text import TextSource
    from charlstm.training.trainer import train

    extra = {"vocab_size": 400} if tokenizer == "bpe" else {}
    config = TrainConfig(tokenizer=tokenizer, batch_size=4, bptt=16, max_steps=10, eval_every=10, device="cpu", seed=1, **extra)
    shape = ModelShape(embedding_dim=16, hidden_size=32, num_layers=1)
    return train(TextSource.from_text(text, "small", "small"), config, shape, out=out).run_dir


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory, small_text) -> dict[str, Path]:
    """A tiny run of each tokenizer kind: char, byte, bpe (SentencePiece)."""
    root = tmp_path_factory.mktemp("kinds")
    return {"char": tiny_run, "byte": _train(root / "byte", small_text, "byte"), "bpe": _train(root / "bpe", small_text, "bpe")}


def _client(*runs_, **options):
    server = Server([load_served(run, "cpu", weights=options.pop("weights", "fp32")) for run in runs_], Limits(), **options)
    client = TestClient(server.app)
    client.__enter__()
    _ready(client)
    return client


@pytest.fixture(scope="module")
def client(tiny_run):
    c = _client(tiny_run)
    yield c
    c.__exit__(None, None, None)


# ------------------------------------------------------------------------ tokenizer endpoints


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_tokenize_detokenize_and_tokenizer_info_for_every_tokenizer(runs, kind):
    lm = charlstm.load(runs[kind], device="cpu")
    client = _client(runs[kind])
    try:
        text = "The end of it, said he."
        plain = client.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()
        assert plain["tokens"] == lm.tokenizer.encode(text).tolist() and plain["count"] == len(plain["tokens"])
        assert plain["max_model_len"] == Limits().max_prompt_chars + Limits().max_tokens
        special = client.post("/tokenize", json={"prompt": text, "return_token_strs": True}).json()  # vLLM: true by default
        assert special["tokens"] == [default_start_id(lm.tokenizer), *plain["tokens"]]
        assert len(special["token_strs"]) == special["count"]
        assert client.post("/detokenize", json={"tokens": plain["tokens"]}).json() == {"prompt": text}
        info = client.get("/tokenizer_info").json()
        assert info["bos_token"] == "\n" and info["eos_token"] is None and "chat_template" in info
        assert info["tokenizer_class"] == {"char": "CharTokenizer", "byte": "ByteTokenizer", "bpe": "SentencePieceTokenizer"}[kind]
        assert info["vocab_size"] == lm.tokenizer.vocab_size
        bad = client.post("/detokenize", json={"tokens": [10**6]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"
    finally:
        client.__exit__(None, None, None)


def test_tokenizer_endpoints_name_the_model_when_several_are_served(runs):
    client = _client(runs["char"], runs["byte"])
    try:
        unnamed = client.post("/tokenize", json={"prompt": "a"})
        assert unnamed.status_code == 400 and unnamed.json()["error"]["param"] == "model"
        assert client.post("/tokenize", json={"prompt": "é", "model": "byte", "add_special_tokens": False}).json()["tokens"] == [195, 169]
        assert client.get("/tokenizer_info", params={"model": "byte"}).json()["tokenizer_class"] == "ByteTokenizer"
        assert client.get("/tokenizer_info", params={"model": "nope"}).status_code == 404
        assert client.get("/tokenizer_info", params={"colour": "red"}).json()["error"]["param"] == "colour"
    finally:
        client.__exit__(None, None, None)


@pytest.mark.parametrize(
    "body, param",
    [({}, "prompt"), ({"prompt": 3}, "prompt"), ({"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens"),
     ({"prompt": "a", "extra": 1}, "extra"), ({"prompt": "a", "model": 3}, "model")],
)
def test_tokenize_refusals_name_the_field(client, body, param):
    response = client.post("/tokenize", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


# ------------------------------------------------------------------------- token-id prompts


def test_token_id_prompts_write_what_the_text_prompt_writes(client, tiny_run):
    ids = client.post("/tokenize", json={"prompt": "The ", "add_special_tokens": False}).json()["tokens"]
    ask = {"max_tokens": 20, "temperature": 0}
    text = client.post("/v1/completions", json={"prompt": "The ", **ask}).json()
    by_ids = client.post("/v1/completions", json={"prompt": ids, **ask}).json()
    assert by_ids["choices"][0]["text"] == text["choices"][0]["text"]
    assert by_ids["usage"] == text["usage"]
    two = client.post("/v1/completions", json={"prompt": [ids, ids[:2]], **ask}).json()
    assert [c["index"] for c in two["choices"]] == [0, 1] and two["choices"][0]["text"] == text["choices"][0]["text"]


@pytest.mark.parametrize("prompt", [[10**6], [[1, 2], [10**6]], [-1], [[]], [[1], "a"], [1.5]])
def test_token_ids_out_of_range_or_malformed_are_a_400_naming_prompt(client, prompt):
    response = client.post("/v1/completions", json={"prompt": prompt})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


# ----------------------------------------------------------------- the prompt's logprobs, echoed


@pytest.mark.parametrize("kind, weights", [("char", "fp32"), ("char", "int8"), ("byte", "fp32"), ("bpe", "fp32")])
def test_echoed_logprobs_equal_model_score(runs, kind, weights):
    """lm-eval's log-likelihood of a continuation (the sum of its echoed token_logprobs) is
    Model.score(context + continuation) - Model.score(context), for the same --weights."""
    lm = charlstm.load(runs[kind], device="cpu", weights=weights)
    client = _client(runs[kind], weights=weights)
    try:
        context, continuation = "She sat by the", " window"
        tokenized = client.post("/tokenize", json={"prompt": context + continuation, "add_special_tokens": False}).json()
        ctxlen = len(client.post("/tokenize", json={"prompt": context, "add_special_tokens": False}).json()["tokens"])
        body = client.post(
            "/v1/completions", json={"prompt": tokenized["tokens"], "echo": True, "logprobs": 2, "max_tokens": 0}
        ).json()
        (choice,) = body["choices"]
        lp = choice["logprobs"]
        assert choice["text"] == context + continuation and choice["finish_reason"] == "length"
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == tokenized["count"]
        assert all(len(top) <= 2 for top in lp["top_logprobs"][1:])
        # one line a call: int8's products quantize each batch's activations together
        (full,), (head,) = lm.score([context + continuation]), lm.score([context])
        assert math.isclose(sum(lp["token_logprobs"][ctxlen:]), full.logprob - head.logprob, abs_tol=1e-5)
        first = lm.score([context[:1]])[0].logprob if kind != "bpe" else None
        if first is not None:  # the whole line: the first token's score (against the start token) plus the rest
            assert math.isclose(first + sum(lp["token_logprobs"][1:]), full.logprob, abs_tol=1e-5)
        # A text prompt, echoed with generated tokens after it: the prompt's records, then theirs.
        more = client.post("/v1/completions", json={"prompt": context, "echo": True, "logprobs": 0, "max_tokens": 3, "temperature": 0}).json()
        records = more["choices"][0]["logprobs"]
        assert math.isclose(sum(records["token_logprobs"][1:ctxlen]), head.logprob - (first or 0.0), abs_tol=1e-5) or kind == "bpe"
        assert "".join(records["tokens"][:ctxlen]) == context or kind == "bpe"
        assert len(records["token_logprobs"]) == ctxlen + 3
    finally:
        client.__exit__(None, None, None)


def test_echo_with_logprobs_streams_the_prompts_records_first(client):
    ask = {"prompt": "ab", "echo": True, "logprobs": 1, "max_tokens": 2, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/completions", json=ask) as response:
        chunks = _sse(response.read().decode())
    first = chunks[0]["choices"][0]
    assert first["text"] == "ab" and first["logprobs"]["tokens"] == ["a", "b"] and first["logprobs"]["token_logprobs"][0] is None
    assert sum(len(c["choices"][0]["logprobs"]["tokens"]) for c in chunks if c["choices"] and c["choices"][0]["logprobs"]) == 4


# ------------------------------------------------------------------------------------- chat


def test_plain_template_and_its_marker():
    template = ChatTemplate.named("plain")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"}]
    assert template.render(messages) == "System: Be brief.\nUser: Who?\nAssistant: "
    assert template.stops == ("\nUser:",)
    assert ChatTemplate.named("chatml").stops == ("<|im_end|>",)


def test_templates_run_sandboxed_and_refusals_are_config_errors(tmp_path):
    from charlstm.errors import ConfigError

    escape = tmp_path / "escape.jinja"
    escape.write_text("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match="failed"):
        ChatTemplate.named(str(escape)).render([{"role": "user", "content": "x"}])
    strict = ChatTemplate(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system messages') }}{% endif %}"
        "{{ m.content }}\n{% endfor %}", "strict"
    )
    with pytest.raises(ConfigError, match="no system messages"):
        strict.render([{"role": "system", "content": "x"}])
    with pytest.raises(ConfigError, match="chat template broken"):
        ChatTemplate("{% for %}", "broken")


def test_chat_completion_is_the_sessions_reply(client, tiny_run):
    """The server's chat reply for a message and seed is what Model.session(chat_template=...)
    replies to the same message with the same seed, turn after turn."""
    lm = charlstm.load(tiny_run, device="cpu")
    session = lm.session(chat_template="plain", seed=7, temperature=1.0, length=40)
    first, second = session.reply("Who is there"), session.reply("And then")
    ask = {"seed": 7, "temperature": 1.0, "max_completion_tokens": 40}
    messages = [{"role": "user", "content": "Who is there"}]
    body = client.post("/v1/chat/completions", json={"messages": messages, **ask}).json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": first}
    assert choice["finish_reason"] in ("stop", "length") and "\nUser:" not in first
    transcript = "User: Who is there\nAssistant: "
    assert body["usage"]["prompt_tokens"] == len(transcript)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "And then"}]
    again = client.post("/v1/chat/completions", json={"messages": messages, **ask, "seed": 8}).json()
    assert again["choices"][0]["message"]["content"] == second


def test_chat_stream_logprobs_n_and_stop(client):
    ask = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 25, "temperature": 0}
    whole = client.post("/v1/chat/completions", json={**ask, "n": 2, "logprobs": True, "top_logprobs": 2}).json()
    assert [c["index"] for c in whole["choices"]] == [0, 1]
    content = whole["choices"][0]["message"]["content"]
    entries = whole["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in entries).startswith(content)
    assert all(len(e["top_logprobs"]) == 2 and e["bytes"] == list(e["token"].encode()) for e in entries)
    with client.stream("POST", "/v1/chat/completions", json={**ask, "stream": True, "stream_options": {"include_usage": True}}) as response:
        chunks = _sse(response.read().decode())
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == content
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"]["completion_tokens"] >= 1
    if len(content) > 4:
        stop = content[2:4]
        cut = client.post("/v1/chat/completions", json={**ask, "stop": stop}).json()["choices"][0]
        assert cut["message"]["content"] == content[: content.index(stop)] and cut["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        ({"messages": [{"role": "user", "content": "\u20ac"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": "a"}], "logprobs": True, "top_logprobs": 9}, "top_logprobs"),
        ({"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 10**6}, "max_completion_tokens"),
        ({"messages": [{"role": "user", "content": "a"}], "prompt": "a"}, "prompt"),
        ({"messages": [{"role": "user", "content": "a"}], "temperature": -1}, "temperature"),
    ],
)
def test_chat_refusals_name_the_field(client, body, param):
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_a_template_that_refuses_the_messages_is_a_400(tiny_run, tmp_path):
    strict = ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('start with a user') }}{% endif %}x", "strict")
    client = _client(tiny_run, chat_template=strict)
    try:
        response = client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "a"}]})
        assert response.status_code == 400 and "start with a user" in response.json()["error"]["message"]
        assert client.get("/tokenizer_info").json()["chat_template"] == strict.source
    finally:
        client.__exit__(None, None, None)


def test_charlstm_chat_with_a_template_replies_as_the_session(tiny_run):
    result = run_cli("chat", tiny_run, "--chat-template", "chatml", "--seed", "3", "--length", "30", "--device", "cpu",
                     input="Hello\nWhat now\n")
    assert result.returncode == 0, result.stderr
    session = charlstm.load(tiny_run, device="cpu").session(chat_template="chatml", seed=3, length=30)
    assert result.stdout == session.reply("Hello") + "\n" + session.reply("What now") + "\n"
    missing = run_cli("chat", tiny_run, "--chat-template", "no/such.jinja", "--device", "cpu", input="x\n")
    assert missing.returncode != 0 and "no/such.jinja" in missing.stderr and "Traceback" not in missing.stderr


def test_serve_refuses_a_broken_template_before_listening(tiny_run, tmp_path):
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for %}")
    result = run_cli("serve", tiny_run, "--chat-template", broken, "--port", "0")
    assert result.returncode != 0 and "chat template broken.jinja" in result.stderr


# ---------------------------------------------------------------------- the docs' examples


def _docs_blocks(language: str, heading: str) -> list[str]:
    text = (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_the_serving_pages_chat_and_token_examples_run(tiny_run, capsys):
    server = Server([load_served(tiny_run, "cpu", name="shakespeare")], Limits())
    with _listening(server) as url:
        for heading in ("Chat", "Tokens and the prompt's log-probabilities"):
            for block in _docs_blocks("bash", heading):
                script = block.replace("http://127.0.0.1:8000", url).replace("Who is there?", "Who is there")
                result = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=60)
                assert result.returncode == 0, result.stderr
                for line in filter(None, result.stdout.replace("}{", "}\n{").splitlines()):
                    assert "error" not in json.loads(line), line
        for block in _docs_blocks("python", "Chat"):
            exec(block.replace("http://127.0.0.1:8000", url).replace("Who is there?", "Who is there"), {})
    assert capsys.readouterr().out


# ------------------------------------------------------------------------- the real clients


@pytest.mark.slow
def test_openai_chat_completions_plain_and_streamed_against_charlstm_serve(tiny_run):
    openai = pytest.importorskip("openai")
    process = subprocess.Popen(
        [sys.executable, "-m", "charlstm", "serve", str(tiny_run), "--port", "0", "--device", "cpu", "--chat-template", "chatml"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = None
        for _ in range(200):
            found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", process.stderr.readline())
            if found:
                url = found.group(1)
                break
        assert url
        for _ in range(500):
            if httpx.get(url + "/health").status_code == 200:
                break
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        messages = [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hello there"}]
        plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, seed=5, temperature=0.9)
        transcript = ChatTemplate.named("chatml").render(messages)
        expected = charlstm.load(tiny_run, device="cpu").generate(transcript, length=30, seed=5, temperature=0.9, stop="<|im_end|>")
        assert plain.choices[0].message.content == expected
        assert plain.choices[0].message.role == "assistant" and plain.usage.completion_tokens >= 1
        streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, seed=5, temperature=0.9, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == plain.choices[0].message.content
        with_logprobs = client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=5, logprobs=True, top_logprobs=2)
        assert len(with_logprobs.choices[0].logprobs.content[0].top_logprobs) == 2
    finally:
        process.terminate()
        process.wait(timeout=20)


LM_EVAL_DOCS = [  # held-out text (the tiny model trained on the first 20,000 characters), each with 3 endings
    ("and the others", [" went home", " zqxv jj", " 1234"]),
    ("It was the best of", [" times", " xxyyzz", " qqqq"]),
    ("He looked at the", [" door", " ZZZZ", " ()()"]),
    ("the end of the", [" road", " vvvv", " @@@@"]),
]


def _lm_eval_task(folder: Path) -> Path:
    data = folder / "data.jsonl"
    data.write_text("".join(json.dumps({"context": c, "choices": e, "label": 0}) + "\n" for c, e in LM_EVAL_DOCS))
    (folder / "charlstm_mc.yaml").write_text(
        "task: charlstm_mc\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "output_type: multiple_choice\ntest_split: test\ntarget_delimiter: ''\n"
        "doc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\n"
        "metric_list:\n  - metric: acc\n"
    )
    gen = folder / "gen.jsonl"
    gen.write_text("".join(json.dumps({"question": c, "answer": "x"}) + "\n" for c, _ in LM_EVAL_DOCS[:2]))
    (folder / "charlstm_gen.yaml").write_text(
        "task: charlstm_gen\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {gen}\n"
        "output_type: generate_until\ntest_split: test\n"
        "doc_to_text: '{{question}}'\ndoc_to_target: '{{answer}}'\n"
        "generation_kwargs:\n  until: ['.']\n  max_gen_toks: 12\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n"
    )
    return folder


def _lm_eval(folder: Path, model: str, url: str, task: str, *more: str) -> list[dict]:
    out = folder / f"out-{model}"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "lm_eval", "--model", model, "--model_args", f"base_url={url}", "--tasks", task,
               "--include_path", str(folder), "--output_path", str(out), "--log_samples", *more]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    (samples,) = out.rglob(f"samples_{task}_*.jsonl")
    return [json.loads(line) for line in samples.read_text().splitlines()]


@pytest.mark.slow
def test_lm_eval_scores_a_served_model_as_model_score_does(tiny_run, tmp_path):
    """lm_eval --model local-completions with no tokenizer argument: it finds the server's
    tokenizer (/tokenizer_info, /tokenize), sends token ids with echo and logprobs, and its
    per-choice log-likelihoods are Model.score's; local-chat-completions writes what the chat
    endpoint writes for the same messages."""
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("lm_eval.utils").__dict__.get("check_remote_tokenizer_support") or pytest.skip(
        f"lm-eval {getattr(lm_eval, '__version__', '?')} does not find a server's tokenizer (0.4.11 does)"
    )
    folder = _lm_eval_task(tmp_path)
    lm = charlstm.load(tiny_run, device="cpu")
    server = Server([load_served(tiny_run, "cpu")], Limits())
    with _listening(server) as url:
        samples = _lm_eval(folder, "local-completions", url + "/v1/completions", "charlstm_mc")
        chats = _lm_eval(folder, "local-chat-completions", url + "/v1/chat/completions", "charlstm_gen", "--apply_chat_template")
    assert len(samples) == len(LM_EVAL_DOCS)
    for sample in samples:
        context, endings = LM_EVAL_DOCS[sample["doc_id"]]
        got = [float(resp[0][0]) for resp in sample["resps"]]
        head = lm.score([context])[0].logprob
        expected = [lm.score([context + ending])[0].logprob - head for ending in endings]
        assert got == pytest.approx(expected, abs=1e-5)
    for sample in chats:
        question = LM_EVAL_DOCS[sample["doc_id"]][0]
        transcript = ChatTemplate.named("plain").render([{"role": "user", "content": question}])
        reply = lm.generate(transcript, length=12, temperature=0, stop="\nUser:")
        assert sample["resps"][0][0] == reply.split(".")[0]


@pytest.mark.slow
def test_playground_chat_mode_in_headless_chromium(tiny_run, tmp_path):
    """The page's chat mode: two messages, each answered by /v1/chat/completions as the
    conversation goes on, coloured by probability."""
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.conftest import headless_chromium

    server = Server([load_served(tiny_run, "cpu")])
    with _listening(server) as url, headless_chromium(tmp_path) as browser:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 20)
        wait.until(lambda b: b.find_element(By.ID, "model").text.startswith("tiny"))
        Select(browser.find_element(By.ID, "mode")).select_by_value("chat")
        Select(browser.find_element(By.ID, "colour")).select_by_value("probability")
        assert browser.find_element(By.ID, "generate").text == "Send"
        browser.find_element(By.ID, "length").clear()
        browser.find_element(By.ID, "length").send_keys("20")
        browser.find_element(By.ID, "prompt").clear()
        for n, message in enumerate(["Hello there", "And then"], start=1):
            browser.find_element(By.ID, "prompt").send_keys(message)
            browser.find_element(By.ID, "generate").click()
            wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("done"))
            assert len(browser.find_elements(By.CSS_SELECTOR, "#output .turn.assistant")) == n
        users = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#output .turn.user")]
        assert users == ["user\nHello there", "user\nAnd then"]
        assert browser.find_elements(By.CSS_SELECTOR, "#output .turn.assistant span[title^='p = ']")
        browser.find_element(By.ID, "clear").click()
        assert browser.find_element(By.ID, "output").text == ""
