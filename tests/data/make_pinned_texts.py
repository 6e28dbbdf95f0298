#!/usr/bin/env python
"""Pinned texts: what each text-writing path of charlstm writes today, for tiny models built
without training, so that a rewrite of the generation code (sampling, chat, the server's batcher,
the API) can be checked to write the very same texts.

    python tests/data/make_pinned_texts.py > tests/data/pinned_texts.json
    PYTHONPATH=/path/to/other/checkout python tests/data/make_pinned_texts.py > ...  (pin that tree)
    python tests/data/make_pinned_texts.py --train-sp     (rewrite tests/data/pinned_sp.model)

``tests/test_same_text.py`` imports this file, recomputes every case with the code under test and
compares with the JSON: texts exactly, mean log-probabilities and scores within 1e-5.

Every model is ``torch.manual_seed(k)`` then ``LanguageModel(ModelConfig(...))``, its recurrent
weights and output projection scaled up (``RECURRENT_SCALE``, ``HEAD_SCALE``; a few biases raised)
so that the texts depend on what came before and are not pure noise, saved as a run directory's
``best.pt`` with ``charlstm.runs.checkpoint.save_checkpoint``; every path then loads that run
through the public entry points: ``charlstm.load`` (``generate``, ``stream``, ``session``,
``score``), ``charlstm sample --json`` and ``charlstm chat`` (Click, in-process, as
``tests.conftest.run_cli``), and the server (``Server`` with ``load_served``, through starlette's
``TestClient``).

What each path is given, per case (``settings``: ``Model.generate``'s keyword arguments):

    generate      Model.generate(prime, **settings): a str, or a list for num_samples > 1
    details       Model.generate(..., details=True): text, tokens, mean_logprob per sample
    stream        "".join(Model.stream(prime, **settings)) (num_samples 1 only)
    cli           charlstm sample RUN --prime P --seed S ... --json: each record's text, tokens, mean_logprob
    session       Model.session(**settings without prime/stop/num_samples), then reply() per turn
    chat_cli      charlstm chat RUN with the same settings, the turns as stdin lines: its stdout
    server        POST /v1/completions {prompt, seed, temperature, top_k, top_p, min_p,
                  repetition_penalty, repetition_window, stop, max_tokens = length, n}: per n,
                  each choice's text and finish_reason. max_tokens counts tokens while length
                  counts characters (the same for a char vocabulary, not for byte or bpe).
                  n > 1: choice j is drawn with seed + j (what the server does today; it is not
                  what sample --num-samples writes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # for ``tests.conftest``; after PYTHONPATH, so a pinned tree wins

import torch  # noqa: E402

SP_MODEL = HERE / "pinned_sp.model"
RECURRENT_SCALE = 2.0  # the recurrent layers' weights, times this: a state that depends on the text
HEAD_SCALE = 16.0  # the output projection's weights, times this: peaked distributions, not noise
TOLERANCE = 1e-5  # on mean log-probabilities and scores

ALPHABET = "\n !',-.:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ACCENTED = "éèàüö日"  # 2-byte and 3-byte UTF-8 characters

# model id -> how it is built
MODELS = {
    "char-lstm": {"tokenizer": "char", "cell": "lstm", "num_layers": 1, "seed": 1},
    "char-lstm-2": {"tokenizer": "char", "cell": "lstm", "num_layers": 2, "seed": 2},
    "char-gru": {"tokenizer": "char", "cell": "gru", "num_layers": 2, "seed": 3},
    "char-rnn": {"tokenizer": "char", "cell": "rnn", "num_layers": 1, "seed": 4},
    "char-accents": {"tokenizer": "char-accents", "cell": "lstm", "num_layers": 1, "seed": 5},
    "byte-lstm": {"tokenizer": "byte", "cell": "lstm", "num_layers": 1, "seed": 6},
    "bpe-lstm": {"tokenizer": "bpe", "cell": "lstm", "num_layers": 1, "seed": 7},
}

TURNS = ["Then", " she said"]
ACCENT_TURNS = ["Un été", " à Zürich"]


def _case(case_id: str, model: str, prime: str, session=None, server=None, **settings) -> dict:
    """One case: its id, model, prime, ``Model.generate``'s settings (the seed among them), and the
    optional paths it is pinned on: ``session``, the turns a session replies to; ``server``, the
    n values /v1/completions is asked for."""
    case = {"id": case_id, "model": model, "prime": prime, "settings": settings}
    if session is not None:
        case["session"] = session
    if server is not None:
        case["server"] = server
    return case


CAT = "the cat sat on the mat. the cat sat on the "
CASES = [
    _case("greedy", "char-lstm", "The ", TURNS, [1, 2], length=50, temperature=0.0, seed=1),
    _case("temperature-0.8", "char-lstm", "The ", TURNS, [1, 2], length=50, temperature=0.8, seed=2),
    _case("temperature-1.3", "char-lstm", "The ", None, [1], length=50, temperature=1.3, seed=3),
    _case("empty-prime", "char-lstm", "", None, [1], length=40, temperature=0.8, seed=4),
    _case("top-k", "char-lstm", "It was ", TURNS, [1, 2], length=50, temperature=1.0, top_k=5, seed=5),
    _case("top-p", "char-lstm", "It was ", None, [1, 2], length=50, temperature=1.0, top_p=0.8, seed=6),
    _case("min-p", "char-lstm", "It was ", None, [1], length=50, temperature=1.0, min_p=0.1, seed=7),
    _case(
        "filters-together", "char-lstm-2", "Once ", None, [1],
        length=50, temperature=1.2, top_k=20, top_p=0.9, min_p=0.05, seed=8,
    ),
    _case(
        "repetition-penalty", "char-lstm", "The ", TURNS, [1, 2],
        length=50, temperature=0.8, repetition_penalty=1.3, repetition_window=8, seed=9,
    ),
    _case(
        "repetition-penalty-greedy", "char-lstm", "The ", None, [1],
        length=50, temperature=0.0, repetition_penalty=1.3, repetition_window=8, seed=9,
    ),
    _case(
        "no-repeat-ngram", "char-lstm", "The ", TURNS, None,
        length=50, temperature=0.0, no_repeat_ngram=4, seed=10,
    ),
    _case(
        "no-repeat-ngram-sampled", "char-lstm", "The ",
        length=50, temperature=0.8, no_repeat_ngram=4, seed=11,
    ),
    # "IxIm": the unstopped text (temperature-0.8's, 60 long) has "IxIxIm": a partial match held back first
    _case("stop", "char-lstm", "The ", None, [1, 2], length=60, temperature=0.8, seed=2, stop="IxIm"),
    _case(
        "num-samples-3", "char-lstm", "The ", None, [3],
        length=40, temperature=0.8, num_samples=3, seed=12,
    ),
    # "qq" ends two of the three samples, at different tokens; the third runs to its length
    _case(
        "num-samples-3-stop", "char-lstm", "The ", None, [3],
        length=40, temperature=0.8, num_samples=3, seed=12, stop="qq",
    ),
    _case(
        "num-samples-2-top-p", "char-lstm-2", "Once ", None, [2],
        length=40, temperature=1.0, top_p=0.9, num_samples=2, seed=13,
    ),
    _case("cache-50", "char-lstm", CAT, TURNS, None, length=50, temperature=0.8, cache_size=50, seed=14),
    _case("cache-50-greedy", "char-lstm", CAT, length=50, temperature=0.0, cache_size=50, seed=14),
    _case(
        "weights-int8", "char-lstm", "The ", TURNS, [1], length=50, temperature=0.8, weights="int8", seed=2
    ),
    _case(
        "weights-int8-greedy", "char-lstm", "The ", None, [1],
        length=50, temperature=0.0, weights="int8", seed=1,
    ),
    _case(
        "weights-bf16", "char-lstm", "The ", TURNS, [1], length=50, temperature=0.8, weights="bf16", seed=2
    ),
    _case("gru", "char-gru", "The ", TURNS, [1, 2], length=50, temperature=0.8, seed=15),
    _case("gru-greedy", "char-gru", "The ", None, [1], length=50, temperature=0.0, seed=15),
    _case("rnn", "char-rnn", "The ", TURNS, [1], length=50, temperature=0.8, seed=16),
    _case("rnn-greedy", "char-rnn", "The ", None, [1], length=50, temperature=0.0, seed=16),
    _case(
        "byte", "byte-lstm", "The café ", ["Then", " the café"], [1, 2],
        length=50, temperature=0.8, seed=17,
    ),
    _case(
        "byte-greedy-stop", "byte-lstm", "The ", None, [1],
        length=50, temperature=0.0, seed=17, stop="qtt",
    ),
    _case("bpe", "bpe-lstm", "The ", TURNS, [1, 2], length=60, temperature=0.8, seed=18),
    _case(
        "bpe-top-k-stop", "bpe-lstm", "The ", None, [1],
        length=60, temperature=1.0, top_k=10, seed=19, stop="gn of",
    ),
    _case("accents", "char-accents", "Un été à ", ACCENT_TURNS, [1, 2], length=50, temperature=0.8, seed=20),
    _case(
        "accents-stop", "char-accents", "Un été à ", None, [1],
        length=50, temperature=0.8, seed=20, stop="é",
    ),
]

SCORE_MODEL = "char-lstm"
SCORE_LINES = ["The cat sat on the mat.", "It was a dark and stormy night"]


# ------------------------------------------------------------------------------------- models


def sentencepiece_text() -> str:
    from charlstm.data.text import builtin_text

    return builtin_text()[:20_000]


def train_sentencepiece() -> bytes:
    from charlstm.data.tokenizers import SentencePieceTokenizer

    return SentencePieceTokenizer.train(sentencepiece_text(), "bpe", 400).model_proto


def make_tokenizer(kind: str):
    from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer, SentencePieceTokenizer

    if kind == "char":
        return CharTokenizer(ALPHABET)
    if kind == "char-accents":
        return CharTokenizer("".join(sorted(ALPHABET + ACCENTED)))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return SentencePieceTokenizer(SP_MODEL.read_bytes(), "bpe")
    raise ValueError(kind)


def build_model(model_id: str):
    """The model ``model_id`` names and its tokenizer: the same weights on every run."""
    from charlstm.config import ModelConfig
    from charlstm.model import LanguageModel

    spec = MODELS[model_id]
    tokenizer = make_tokenizer(spec["tokenizer"])
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, cell=spec["cell"], embedding_dim=16, hidden_size=32,
        num_layers=spec["num_layers"], dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(spec["seed"])
        model = LanguageModel(config)
    with torch.no_grad():
        for name, weight in model.rnn.named_parameters():
            if name.startswith("weight"):
                weight.mul_(RECURRENT_SCALE)
        model.head.weight.mul_(HEAD_SCALE)
        table = tokenizer.token_bytes()
        if spec["tokenizer"] == "char-accents":  # make the accented characters come up
            for i, piece in enumerate(table):
                if len(piece) > 1 and i != tokenizer.unk_id:
                    model.head.bias[i] += 1.5
        if spec["tokenizer"] == "byte":  # mostly ASCII letters and spaces, some bytes of é (c3 a9)
            for i in range(256):
                if chr(i).isalpha() and i < 128 or i == 32:
                    model.head.bias[i] += 4.0
            model.head.bias[0xC3] += 3.0
            model.head.bias[0xA9] += 3.0
        if spec["tokenizer"] == "bpe":  # mostly the merged pieces, fewer lone bytes
            for i, piece in enumerate(table):
                if len(piece) > 1:
                    model.head.bias[i] += 3.0
    return model, tokenizer


def save_run(model_id: str, directory: Path) -> Path:
    """The run directory ``directory/model_id`` holding the model as ``best.pt``."""
    from charlstm.runs.checkpoint import save_checkpoint

    model, tokenizer = build_model(model_id)
    run = Path(directory) / model_id
    run.mkdir(parents=True, exist_ok=True)
    payload = {
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_state": {"step": 0},
        "corpus": {"name": f"pinned {model_id}"},
    }
    save_checkpoint(run / "best.pt", payload)
    return run


# -------------------------------------------------------------------------------------- paths


def _cli(*args, input=None):
    from tests.conftest import run_cli

    result = run_cli(*args, input=input)
    if result.returncode != 0:
        raise RuntimeError(f"charlstm {' '.join(map(str, args))} failed: {result.stderr}")
    return result.stdout


def _flags(settings: dict, names) -> list[str]:
    out = []
    for name in names:
        value = settings.get(name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


_SAMPLE_FLAGS = (
    "length", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repetition_window",
    "no_repeat_ngram", "num_samples", "seed", "stop", "weights", "cache_size",
)
_SESSION_SETTINGS = (
    "length", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "repetition_window",
    "no_repeat_ngram", "seed", "weights", "cache_size",
)


def _record(completion) -> dict:
    return {"text": completion.text, "tokens": completion.tokens, "mean_logprob": completion.mean_logprob}


def python_paths(case: dict, run: Path) -> dict:
    """What ``generate``, ``generate(details=True)``, ``stream``, ``sample --json``, a session
    and ``chat`` write for ``case``, on the run directory ``run``."""
    import charlstm

    prime, settings = case["prime"], case["settings"]
    lm = charlstm.load(run, device="cpu")
    out = {"generate": lm.generate(prime, **settings)}
    details = lm.generate(prime, **settings, details=True)
    out["details"] = [_record(c) for c in details] if isinstance(details, list) else _record(details)
    if settings.get("num_samples", 1) == 1:
        out["stream"] = "".join(lm.stream(prime, **settings))
    flags = _flags(settings, _SAMPLE_FLAGS)
    stdout = _cli("sample", run, "--prime", prime, *flags, "--device", "cpu", "--json")
    records = [json.loads(line) for line in stdout.splitlines()]
    out["cli"] = [{k: r[k] for k in ("text", "tokens", "mean_logprob")} for r in records]
    if case.get("session"):
        chosen = {k: settings[k] for k in _SESSION_SETTINGS if k in settings}
        session = lm.session(**chosen)
        out["session"] = [session.reply(turn) for turn in case["session"]]
        lines = "".join(turn + "\n" for turn in case["session"])
        flags = _flags(chosen, _SESSION_SETTINGS)
        out["chat_cli"] = _cli("chat", run, *flags, "--device", "cpu", input=lines)
    return out


def completion_body(case: dict, n: int) -> dict:
    """The /v1/completions request of ``case`` asking for ``n`` choices."""
    s = case["settings"]
    body = {
        "prompt": case["prime"], "max_tokens": s["length"], "temperature": s.get("temperature", 0.8), "n": n,
        "seed": s["seed"],
    }
    for name in ("top_k", "top_p", "min_p", "repetition_penalty", "repetition_window", "stop"):
        if s.get(name) is not None:
            body[name] = s[name]
    return body


def _client(run: Path, weights: str = "fp32"):
    """A TestClient of a server of ``run`` (a context manager), ready once entered."""
    import contextlib
    import time

    from starlette.testclient import TestClient

    from charlstm.serving.app import Server
    from charlstm.serving.models import load_served

    @contextlib.contextmanager
    def client():
        server = Server([load_served(run, "cpu", weights=weights)])
        with TestClient(server.app) as c:
            for _ in range(500):
                if c.get("/health").status_code == 200:
                    break
                time.sleep(0.01)
            else:
                raise RuntimeError("the server never became ready")
            yield c

    return client()


def server_paths(case: dict, run: Path) -> dict:
    """Per n in ``case["server"]``: each choice's text and finish_reason from /v1/completions."""
    out = {}
    with _client(run, case["settings"].get("weights", "fp32")) as client:
        for n in case["server"]:
            response = client.post("/v1/completions", json=completion_body(case, n))
            if response.status_code != 200:
                raise RuntimeError(f"/v1/completions answered {response.status_code}: {response.text}")
            choices = sorted(response.json()["choices"], key=lambda c: c["index"])
            out[f"n={n}"] = [{"text": c["text"], "finish_reason": c["finish_reason"]} for c in choices]
    return out


def _score(s) -> dict:
    return {"tokens": s.tokens, "chars": s.chars, "logprob": s.logprob, "bits_per_char": s.bits_per_char}


def scores(run: Path) -> dict:
    """``Model.score`` of ``SCORE_LINES`` with fp32 and int8 weights (loaded with each)."""
    import charlstm

    return {
        weights: [_score(s) for s in charlstm.load(run, device="cpu", weights=weights).score(SCORE_LINES)]
        for weights in ("fp32", "int8")
    }


def server_scores(run: Path) -> dict:
    """What /v1/score returns for ``SCORE_LINES`` on servers started with fp32 and int8 weights."""
    out = {}
    for weights in ("fp32", "int8"):
        with _client(run, weights) as client:
            response = client.post("/v1/score", json={"input": SCORE_LINES})
            if response.status_code != 200:
                raise RuntimeError(f"/v1/score answered {response.status_code}: {response.text}")
            fields = ("tokens", "chars", "logprob", "bits_per_char")
            out[weights] = [{k: d[k] for k in fields} for d in response.json()["data"]]
    return out


# ------------------------------------------------------------------------------------ writing


def pin(directory: Path) -> dict:
    """Every case's outputs, the scores, and what they were made from."""
    runs = {model_id: save_run(model_id, directory) for model_id in MODELS}
    cases = []
    for case in CASES:
        record = dict(case)
        record["paths"] = python_paths(case, runs[case["model"]])
        if case.get("server"):
            record["server_requests"] = {f"n={n}": completion_body(case, n) for n in case["server"]}
            record["paths"]["server"] = server_paths(case, runs[case["model"]])
        cases.append(record)
    return {
        "about": (
            "What charlstm's text-writing paths wrote for tiny untrained models; "
            "tests/data/make_pinned_texts.py says how each model is built and each path called, "
            "tests/test_same_text.py checks them. session: the replies to the turns listed under the "
            "case's 'session'. server: /v1/completions with the case's server_requests; n>1: choice j is "
            "seeded with seed + j; max_tokens counts tokens where length counts characters. scores: "
            "Model.score of score_lines loaded with fp32 and with int8 weights (/v1/score on servers "
            "started with those weights must give the same)."
        ),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # int8/bf16 kernels depend on it
        "models": MODELS,
        "cases": cases,
        "score_model": SCORE_MODEL,
        "score_lines": SCORE_LINES,
        "scores": scores(runs[SCORE_MODEL]),
    }


def main() -> None:
    import tempfile

    import charlstm

    if "--train-sp" in sys.argv[1:]:
        SP_MODEL.write_bytes(train_sentencepiece())
        print(f"wrote {SP_MODEL}", file=sys.stderr)
        return
    print(f"pinning charlstm from {Path(charlstm.__file__).parent}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as directory:
        result = pin(Path(directory))
    sys.stdout.reconfigure(encoding="utf-8")
    json.dump(result, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
