"""What each export format costs: size, speed and loss.

For a trained run (default: a model trained on tinyshakespeare), export every format and report:

- safetensors: the folder's size, and its validation loss (it must equal the run's);
- html, per --dtype (f32, f16, int8): the page's size; the loss of the weights the page computes
  with (dequantized, scored by charlstm's evaluation on the last 10% of the text, as
  ``charlstm eval`` scores it); characters per second of the JavaScript stepper under Node and
  of the page itself in headless Chromium (autorun, from file://) where they are installed;
- onnx: the file's size, and a one-token step (batch 1, state carried) in onnxruntime against
  charlstm's own stepper (``charlstm.stepper.TokenStepper``) and nn.LSTM called per token,
  alternating round by round.

    python benchmarks/bench_export.py RUN [--text FILE] [--rounds 5] [--json out.json]

Timings on a shared machine vary; compare the contenders of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import corpus_text, interleave, machine, print_table, stats, write_json  # noqa: E402

from charlstm.stepper import TokenStepper  # noqa: E402
from charlstm.data.text import TextSource  # noqa: E402
from charlstm.evaluation.evaluate import evaluate_source  # noqa: E402
from charlstm.export import export  # noqa: E402
from charlstm.export.html_page import page_weights, stepper_js  # noqa: E402
from charlstm.export.source import load_source  # noqa: E402
from charlstm.model import LanguageModel  # noqa: E402

NODE_SPEED = r"""
const fs = require("fs");
const S = require(process.argv[2]);
const page = fs.readFileSync(process.argv[3], "utf8");
const marker = '<script type="application/json" id="model">';
const start = page.indexOf(marker) + marker.length;
const record = JSON.parse(page.slice(start, page.indexOf("</script>", start)));
const model = new S.Model(record), tokenizer = new S.Tokenizer(record.tokenizer);
const length = Number(process.argv[4]);
const t0 = performance.now();
let text = "";
for (const piece of S.generate(model, tokenizer, { length, temperature: 0.8, seed: 1 })) text += piece;
process.stdout.write(String(Array.from(text).length / ((performance.now() - t0) / 1000)));
"""

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def node_rate(page: Path, work: Path, length: int) -> float | None:
    node = shutil.which("node")
    if node is None:
        return None
    (work / "stepper.js").write_text(stepper_js())
    (work / "speed.js").write_text(NODE_SPEED)
    done = subprocess.run([node, work / "speed.js", work / "stepper.js", page, str(length)], capture_output=True, text=True, check=True)
    return float(done.stdout)


def chromium_rate(page: Path, work: Path, length: int) -> float | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None
    with tempfile.TemporaryDirectory(dir=work) as profile:
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom",
             page.resolve().as_uri() + f"#autorun&length={length}&seed=1"],
            capture_output=True, text=True, timeout=600,
        )
    found = re.search(r'data-chars-per-second="([0-9.]+)"', done.stdout)
    return float(found.group(1)) if found else None


def eval_loss(model, tokenizer, text: str, bptt: int) -> float:
    report = evaluate_source(model, tokenizer, TextSource.from_text(text, "validation"), batch_size=16, bptt=bptt, device="cpu")
    return report.loss


def onnx_step_rates(source, path: Path, rounds: int, steps: int) -> dict[str, list[float]] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    config, model = source.config, source.model
    zeros = torch.zeros(config.num_layers, 1, config.hidden_size).numpy()
    stepper = TokenStepper(model)

    def run_onnx():
        h, c, token = zeros, zeros, torch.zeros(1, 1, dtype=torch.long).numpy()
        start = time.perf_counter()
        for _ in range(steps):
            logits, h, c = session.run(None, {"ids": token, "h": h, "c": c})
            token[0, 0] = int(logits[0, 0].argmax())
        return steps / (time.perf_counter() - start)

    @torch.no_grad()
    def run_stepper():
        hidden, token = model.init_hidden(1), torch.zeros(1, dtype=torch.long)
        start = time.perf_counter()
        for _ in range(steps):
            logits, hidden = stepper(token, hidden)
            token = logits.argmax(dim=1)
        return steps / (time.perf_counter() - start)

    @torch.no_grad()
    def run_module():
        hidden, token = model.init_hidden(1), torch.zeros(1, 1, dtype=torch.long)
        start = time.perf_counter()
        for _ in range(steps):
            logits, hidden = model(token, hidden)
            token = logits[0].argmax(dim=1).view(1, 1)
        return steps / (time.perf_counter() - start)

    return interleave({"onnxruntime": run_onnx, "charlstm TokenStepper": run_stepper, "nn.LSTM per token": run_module}, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a run directory, checkpoint or exported folder")
    parser.add_argument("--text", help="text to score (its last 10%%)  [default: tinyshakespeare]")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=500, help="one-token steps per timed block")
    parser.add_argument("--length", type=int, default=2000, help="characters per page/Node speed run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    text = Path(args.text).read_text() if args.text else corpus_text()[0]
    validation = text[int(len(text) * 0.9) :]
    source = load_source(args.run)
    bptt = source.bptt or 128
    results: dict = {"machine": machine(), "run": str(args.run), "model": source.config.to_dict(), "formats": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_loss = eval_loss(source.model, source.tokenizer, validation, bptt)
        folder = export(args.run, "safetensors", work / "folder")
        folder_source = load_source(work / "folder")
        folder_loss = eval_loss(folder_source.model, folder_source.tokenizer, validation, bptt)
        results["formats"]["safetensors"] = {"bytes": folder.size, "loss": folder_loss}
        rows.append(("safetensors", f"{folder.size:,}", f"{folder_loss:.4f}", "-", "-"))
        for dtype in ("f32", "f16", "int8"):
            page = export(args.run, "html", work / f"page-{dtype}.html", dtype=dtype)
            model = LanguageModel(source.config).eval()
            model.load_state_dict(page_weights(source.model, dtype))
            loss = eval_loss(model, source.tokenizer, validation, bptt)
            node = node_rate(page.out, work, args.length)
            browser = chromium_rate(page.out, work, args.length)
            results["formats"][f"html {dtype}"] = {
                "bytes": page.size, "loss": loss, "loss_cost": loss - base_loss, "node_chars_per_s": node,
                "chromium_chars_per_s": browser,
            }
            shown = lambda v: "n/a" if v is None else f"{v:,.0f}"  # noqa: E731
            rows.append((f"html {dtype}", f"{page.size:,}", f"{loss:.4f} ({loss - base_loss:+.4f})", shown(node), shown(browser)))
        try:
            onnx_file = export(args.run, "onnx", work / "model.onnx")
        except Exception as e:  # the onnx extra is not installed
            print(f"onnx: skipped ({e})")
        else:
            results["formats"]["onnx"] = {"bytes": onnx_file.size}
            rows.append(("onnx", f"{onnx_file.size:,}", "-", "-", "-"))
            rates = onnx_step_rates(source, onnx_file.out, args.rounds, args.steps)
            if rates is not None:
                results["one_token_steps_per_s"] = {name: stats(values) for name, values in rates.items()}
    print(f"model: {source.config}, validation loss of the run's weights {base_loss:.4f} nats/token")
    print_table("export formats", rows, ("format", "bytes", "loss (vs run)", "Node chars/s", "Chromium chars/s"))
    if "one_token_steps_per_s" in results:
        step_rows = [(n, f"{s['median']:,.0f}", f"{s['min']:,.0f}-{s['max']:,.0f}") for n, s in results["one_token_steps_per_s"].items()]
        print_table("one-token step, batch 1 (steps/s)", step_rows, ("contender", "median", "range"))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
