"""charlstm export: the safetensors folder (round trip, checks on untrusted files, loading through
sample/eval), the ONNX graph's parity with PyTorch (skipped without the onnx extra), the HTML
page's JavaScript stepper under Node against PyTorch (skipped without node) and the page itself
in headless Chromium from file:// (skipped without chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import torch

from charlstm.config import ModelConfig, ModelShape, TrainConfig
from charlstm.data.tokenizers import ByteTokenizer, CharTokenizer, SentencePieceTokenizer
from charlstm.errors import CharlstmError, CheckpointError
from charlstm.export import export
from charlstm.export.html_page import model_record_of_page, page_weights, stepper_js
from charlstm.export.source import load_source
from charlstm.model import LanguageModel
from charlstm.runs.checkpoint import TrainState, load_checkpoint, make_payload, model_from_checkpoint, save_checkpoint
from charlstm.runs.folder import CONFIG_FILE, WEIGHTS_FILE, config_sha256, load_folder
from tests.conftest import run_cli

NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_run(tmp_path: Path, text: str, cell="lstm", num_layers=1, tie=False, tokenizer=None, hidden=24, seed=0) -> Path:
    """A run directory holding one untrained (randomly initialised, sharpened) model's best.pt:
    quick to make, and peaked enough that greedy decoding has no near-ties."""
    tokenizer = tokenizer or CharTokenizer.train(text)
    config = ModelConfig.of(
        ModelShape(cell=cell, embedding_dim=hidden if tie else 16, hidden_size=hidden, num_layers=num_layers, tie_weights=tie),
        tokenizer.vocab_size,
    )
    torch.manual_seed(seed)
    model = LanguageModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.mul_(3.0 if name.startswith("rnn.weight_hh") else 1.5)
    run = tmp_path / f"{cell}{num_layers}{'t' if tie else ''}{tokenizer.kind}"
    run.mkdir()
    payload = make_payload(
        model=model,
        model_config=config,
        train_config=TrainConfig(bptt=16),
        tokenizer=tokenizer,
        optimizer=torch.optim.AdamW(model.parameters()),
        train_state=TrainState(best_val_loss=2.5),
        corpus={"name": "tiny text", "sha256": "0" * 64},
    )
    save_checkpoint(run / "best.pt", payload)
    return run


def greedy_ids(model, start: list[int], steps: int) -> list[int]:
    """PyTorch's greedy continuation of ``start``, the state carried one token at a time."""
    with torch.no_grad():
        logits, hidden = model(torch.tensor(start).view(-1, 1))
        out = []
        for _ in range(steps):
            out.append(int(logits[-1, 0].argmax()))
            logits, hidden = model(torch.tensor([[out[-1]]]), hidden)
    return out


# ------------------------------------------------------------------------------------ safetensors


@pytest.mark.parametrize("tie", [False, True])
def test_safetensors_round_trip_is_bit_for_bit(tmp_path, small_text, tie):
    run = make_run(tmp_path, small_text[:3000], tie=tie, hidden=16)
    out = tmp_path / "folder"
    result = export(run, "safetensors", out)
    assert sorted(p.name for p in result.files) == [CONFIG_FILE, WEIGHTS_FILE]
    original = load_checkpoint(run)["model"]
    loaded = load_folder(out)["model"]
    assert sorted(loaded) == sorted(original)
    for name, tensor in original.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor), name
    model, tokenizer = model_from_checkpoint(load_checkpoint(out), "cpu", str(out))
    assert (model.head.weight is model.embedding.weight) == tie
    config = json.loads((out / CONFIG_FILE).read_text())
    assert config["val_loss"] == 2.5 and config["bptt"] == 16 and config["trained_on"] == "tiny text"
    assert config["tokenizer"] == {"kind": "char", "chars": tokenizer.chars}


def test_sample_and_eval_read_a_folder_as_they_read_the_run(tmp_path, tiny_run, text_file):
    out = tmp_path / "folder"
    assert run_cli("export", tiny_run, "--format", "safetensors", "--out", out).returncode == 0
    for command in (["sample", "--length", "80", "--seed", "3"], ["eval", text_file]):
        from_run = run_cli(command[0], tiny_run, *command[1:])
        from_folder = run_cli(command[0], out, *command[1:])
        assert from_run.returncode == from_folder.returncode == 0, from_folder.stderr
        assert from_folder.stdout.replace(str(out), "X") == from_run.stdout.replace(str(tiny_run), "X")
    import charlstm

    assert charlstm.load(out, device="cpu").generate("The", length=40, seed=2) == charlstm.load(
        tiny_run, device="cpu"
    ).generate("The", length=40, seed=2)


def test_a_sentencepiece_folder_carries_its_model(tmp_path, small_text):
    tokenizer = SentencePieceTokenizer.train(small_text, "bpe", 400)
    run = make_run(tmp_path, small_text, tokenizer=tokenizer)
    out = tmp_path / "folder"
    export(run, "safetensors", out)
    assert (out / "tokenizer.model").read_bytes() == tokenizer.model_proto
    _, loaded = model_from_checkpoint(load_checkpoint(out))
    assert loaded.encode("The text").tolist() == tokenizer.encode("The text").tolist()
    with pytest.raises(CharlstmError, match=r"bpe \(SentencePiece\) tokenizer; export it with --format onnx"):
        export(run, "html", tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def _rewrite_config(folder: Path, change) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    config["config_sha256"] = config_sha256(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def test_a_damaged_folder_is_refused_in_one_line(tmp_path, small_text):
    run = make_run(tmp_path, small_text[:3000])
    folder = tmp_path / "folder"
    export(run, "safetensors", folder)
    pristine = {p.name: p.read_bytes() for p in folder.iterdir()}

    def restore():
        for name, data in pristine.items():
            (folder / name).write_bytes(data)

    weights = bytearray(pristine[WEIGHTS_FILE])
    weights[-3] ^= 0x40
    (folder / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(CheckpointError, match=r"checksum mismatch: model.safetensors is corrupt or was changed"):
        load_checkpoint(folder)
    restore()
    (folder / CONFIG_FILE).write_text(pristine[CONFIG_FILE].decode().replace('"val_loss": 2.5', '"val_loss": 0.5'))
    with pytest.raises(CheckpointError, match=r"checksum mismatch: config.json is corrupt or was changed"):
        load_checkpoint(folder)
    restore()
    _rewrite_config(folder, lambda c: c["model_config"].update(hidden_size=32))
    with pytest.raises(CheckpointError, match=r"weights do not match the model: rnn.weight_ih_l0 has shape \(96, 16\), expected \(128, 16\)"):
        model_from_checkpoint(load_checkpoint(folder), "cpu", str(folder))
    restore()
    _rewrite_config(folder, lambda c: c["model_config"].update(hidden_size=1 << 20))
    with pytest.raises(CheckpointError, match=r"hidden_size 1048576 is outside 1..65,536"):
        load_checkpoint(folder)
    restore()
    (folder / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON"):
        load_checkpoint(folder)
    (folder / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"not a complete exported model \(no config.json\)"):
        load_checkpoint(folder)
    restore()
    # NaN weights with every checksum right: the same refusal as a checkpoint's.
    from safetensors.torch import load as load_bytes, save as save_bytes

    state = load_bytes(pristine[WEIGHTS_FILE])
    state["head.bias"][0] = float("nan")
    data = save_bytes(state)
    (folder / WEIGHTS_FILE).write_bytes(data)
    import hashlib

    _rewrite_config(folder, lambda c: c["files"].update({WEIGHTS_FILE: hashlib.sha256(data).hexdigest()}))
    result = run_cli("sample", folder, "--length", "5")
    assert result.returncode == 1
    assert result.stderr.strip() == f"Error: {folder}: refused: non-finite weights (NaN or inf) in head.bias"


def test_nothing_is_replaced_without_force(tmp_path, small_text):
    run = make_run(tmp_path, small_text[:3000])
    for format, out in (("safetensors", tmp_path / "f"), ("html", tmp_path / "p.html")):
        assert run_cli("export", run, "--format", format, "--out", out).returncode == 0
        before = sorted((p.name, p.stat().st_mtime_ns) for p in ([out] if out.is_file() else out.iterdir()))
        again = run_cli("export", run, "--format", format, "--out", out)
        assert again.returncode == 1
        assert again.stderr == f"Error: {out}: already exists; pass --force to replace it\n"
        assert sorted((p.name, p.stat().st_mtime_ns) for p in ([out] if out.is_file() else out.iterdir())) == before
        assert run_cli("export", run, "--format", format, "--out", out, "--force").returncode == 0
    wrong = run_cli("export", run, "--format", "html", "--out", tmp_path / "f", "--force")
    assert wrong.stderr == f"Error: {tmp_path / 'f'}: is a folder, and this format writes one file; choose another --out\n"
    missing = run_cli("export", tmp_path / "nope", "--format", "html", "--out", tmp_path / "x.html")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "no such checkpoint" in missing.stderr


def test_help_describes_every_format():
    result = run_cli("export", "--help")
    for word in ("safetensors", "onnx", "html", "--force", "--dtype", "charlstm[onnx]"):
        assert word in result.stdout


# ------------------------------------------------------------------------------------------- onnx

CELLS = [("lstm", 1), ("lstm", 2), ("gru", 2), ("rnn", 1), ("ln-lstm", 2)]


@pytest.mark.parametrize("cell,num_layers", CELLS)
def test_onnx_matches_pytorch(tmp_path, small_text, cell, num_layers):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    run = make_run(tmp_path, small_text[:3000], cell=cell, num_layers=num_layers)
    out = tmp_path / "model.onnx"
    export(run, "onnx", out)
    import onnx

    graph = onnx.load(str(out))
    ops = {node.op_type for node in graph.graph.node}
    if cell == "ln-lstm":  # no operator of its own: a loop over time, T left dynamic
        assert "Loop" in ops and not ops & {"LSTM", "GRU", "RNN"}
    else:
        assert {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell] in ops and "Loop" not in ops and "Scan" not in ops
    meta = {p.key: json.loads(p.value) for p in graph.metadata_props}
    source = load_source(run)
    assert meta["charlstm.tokenizer"] == {"kind": "char", "chars": source.tokenizer.chars}
    assert meta["charlstm.model_config"] == source.config.to_dict()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model, shape = source.model, (num_layers, 1, 24)
    generator = torch.Generator().manual_seed(1)
    for T in (1, 2, 7):
        for B in (1, 3):
            ids = torch.randint(0, source.config.vocab_size, (T, B), generator=generator)
            h, c = (torch.randn(num_layers, B, 24, generator=generator) for _ in range(2))
            with torch.no_grad():
                logits, hidden = model(ids, (h, c) if cell.endswith("lstm") else (h,))
            got = session.run(None, {"ids": ids.numpy(), "h": h.numpy(), "c": c.numpy()})
            assert got[0].shape == (T, B, source.config.vocab_size)
            torch.testing.assert_close(torch.from_numpy(got[0]), logits, atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(torch.from_numpy(got[1]), hidden[0], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(torch.from_numpy(got[2]), hidden[1] if cell.endswith("lstm") else c, atol=2e-5, rtol=0)
    # 200 greedy steps, the state carried between one-token calls: the same text (60 for the
    # LN-LSTM, whose sharpened random weights make float32's last bits grow within 200 steps).
    start = source.tokenizer.encode("The ").tolist()
    steps = 60 if cell == "ln-lstm" else 200
    expected = greedy_ids(model, start, steps)
    h = c = torch.zeros(shape).numpy()
    logits, h, c = session.run(None, {"ids": torch.tensor(start).view(-1, 1).numpy(), "h": h, "c": c})
    ids = []
    for _ in range(steps):
        ids.append(int(logits[-1, 0].argmax()))
        logits, h, c = session.run(None, {"ids": torch.tensor([[ids[-1]]]).numpy(), "h": h, "c": c})
    assert source.tokenizer.decode(ids) == source.tokenizer.decode(expected)


# ------------------------------------------------------------------------------------------- html

NODE_RUNNER = r"""
const fs = require("fs");
const S = require(process.argv[2]);
const page = fs.readFileSync(process.argv[3], "utf8");
const marker = '<script type="application/json" id="model">';
const start = page.indexOf(marker) + marker.length;
const record = JSON.parse(page.slice(start, page.indexOf("</script>", start)));
const request = JSON.parse(fs.readFileSync(process.argv[4], "utf8"));
const model = new S.Model(record);
const tokenizer = new S.Tokenizer(record.tokenizer);
const state = model.initState();
const logits = request.ids.map((id) => Array.from(model.step(id, state)));
let text = "";
for (const piece of S.generate(model, tokenizer, { prime: request.prime, length: request.length, temperature: 0 })) text += piece;
process.stdout.write(JSON.stringify({ logits, text, encoded: tokenizer.encode(request.prime) }));
"""


def run_stepper(tmp_path: Path, page: Path, ids: list[int], prime: str, length: int) -> dict:
    if NODE is None:
        pytest.skip("node is not installed")
    (tmp_path / "stepper.js").write_text(stepper_js())
    (tmp_path / "runner.js").write_text(NODE_RUNNER)
    (tmp_path / "request.json").write_text(json.dumps({"ids": ids, "prime": prime, "length": length}))
    done = subprocess.run(
        [NODE, tmp_path / "runner.js", tmp_path / "stepper.js", page, tmp_path / "request.json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(done.stdout)


def _model_with(weights: dict, config) -> LanguageModel:
    model = LanguageModel(config).double().eval()
    model.load_state_dict(weights)
    return model


@pytest.mark.parametrize(
    "cell,num_layers,dtype,tokenizer",
    [("lstm", 1, "f32", "char"), ("lstm", 2, "int8", "char"), ("gru", 2, "f16", "char"), ("rnn", 1, "int8", "byte"),
     ("lstm", 1, "f16", "byte"), ("ln-lstm", 2, "int8", "char"), ("ln-lstm", 1, "f16", "byte")],
)
def test_the_page_stepper_matches_pytorch(tmp_path, small_text, cell, num_layers, dtype, tokenizer):
    text = small_text[:3000] + " héllo ✓"
    run = make_run(tmp_path, text, cell=cell, num_layers=num_layers, tokenizer=ByteTokenizer() if tokenizer == "byte" else None)
    page = tmp_path / "page.html"
    export(run, "html", page, dtype=dtype)
    source = load_source(run)
    prime = "The héllo ✓ "
    start = source.tokenizer.encode(prime).tolist()
    ids = source.tokenizer.encode(text[:200]).tolist()
    got = run_stepper(tmp_path, page, ids, prime, 200)
    assert got["encoded"] == start
    # Against PyTorch in float64 on exactly the weights the page computes with (dequantized).
    reference = _model_with(page_weights(source.model, dtype), source.config)
    with torch.no_grad():
        expected, _ = reference(torch.tensor(ids).view(-1, 1))
    js = torch.tensor(got["logits"], dtype=torch.float64)
    torch.testing.assert_close(js, expected[:, 0], atol=1e-9, rtol=1e-9)
    assert got["text"] == source.tokenizer.decode(greedy_ids(reference, start, 200))
    if dtype == "f32":  # and against the float32 model itself
        with torch.no_grad():
            expected32, _ = source.model(torch.tensor(ids).view(-1, 1))
        torch.testing.assert_close(js.float(), expected32[:, 0], atol=1e-4, rtol=1e-4)
        assert got["text"] == source.tokenizer.decode(greedy_ids(source.model, start, 200))


def test_the_default_model_page_is_under_2_mb_with_int8(tmp_path, small_text):
    tokenizer = CharTokenizer("".join(chr(c) for c in range(32, 127)) + "\n\t’“”—")  # a typical vocabulary
    config = ModelConfig.of(ModelShape(), tokenizer.vocab_size)
    torch.manual_seed(0)
    model = LanguageModel(config)
    run = tmp_path / "default"
    run.mkdir()
    save_checkpoint(run / "best.pt", make_payload(
        model=model, model_config=config, train_config=TrainConfig(), tokenizer=tokenizer,
        optimizer=torch.optim.AdamW(model.parameters()), train_state=TrainState(), corpus={"name": "x", "sha256": "0"},
    ))
    size = export(run, "html", tmp_path / "page.html", dtype="int8").size
    assert model.num_parameters() > 1_200_000 and size < 2_000_000
    page = (tmp_path / "page.html").read_text()
    record = model_record_of_page(page)
    assert record["tensors"]["rnn.weight_hh_l0"]["dtype"] == "int8" and record["tensors"]["head.bias"]["dtype"] == "f32"


def test_the_page_fetches_nothing(tmp_path, small_text):
    run = make_run(tmp_path, small_text[:3000])
    page = tmp_path / "page.html"
    export(run, "html", page)
    html = page.read_text()
    assert "default-src 'none'" in html  # the browser refuses any request the page would make
    assert not re.search(r"\b(src|href)\s*=", html)
    assert not re.search(r"fetch\(|XMLHttpRequest|import\(|WebSocket|new Worker", html)


def chromium_dom(page: Path, fragment: str, tmp_path: Path, *extra: str) -> str:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    profile = tmp_path / "profile"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         *extra, "--dump-dom", page.resolve().as_uri() + fragment],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_page_writes_in_headless_chromium_from_a_file(tmp_path, small_text):
    run = make_run(tmp_path, small_text[:3000])
    page = tmp_path / "page.html"
    export(run, "html", page, dtype="f32")
    prime = "The "
    fragment = "#autorun&length=150&temperature=0&prime=" + urllib.parse.quote(prime)
    dom = chromium_dom(page, fragment, tmp_path)
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-state="done"' in body and 'data-chars="150"' in body
    rate = float(re.search(r'data-chars-per-second="([0-9.]+)"', body).group(1))
    assert rate > 0
    import html as html_module

    shown = html_module.unescape(re.search(r'<span id="text">(.*?)</span>', dom, re.S).group(1))
    source = load_source(run)
    assert shown == source.tokenizer.decode(greedy_ids(source.model, source.tokenizer.encode(prime).tolist(), 150))
    assert "trained on: tiny text" in html_module.unescape(dom)
