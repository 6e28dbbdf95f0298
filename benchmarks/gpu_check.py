"""The GPU check: charlstm's CUDA path tested and measured in one call, in at most 8 minutes.

    PYTHONPATH=. python3 benchmarks/gpu_check.py --out DIR [--device cuda|cpu] [--quick] [--corpus FILE]

Writes DIR/report.json (every figure, each part's status) and DIR/log.txt (everything each part
printed). Each part runs in its own process under a hard time limit, inside a global deadline; a
part that runs out of time is killed and recorded as ``timeout`` with what it had measured so
far, and the parts after it still run. Parts, in order (limits in seconds: GPU / --quick):

  machine      GPU, driver, CUDA, cuDNN, torch, CPU; what --precision auto picks; missing
               optional packages (a line each, never a failure)                       20 / 20
  cuda_tests   pytest -m cuda tests/test_cuda.py: train, bitwise resume, sample, eval,
               inspect, a checkpoint from GPU to CPU and back (skipped without CUDA)   75 / 30
  throughput   charlstm's real step (Trainer.train_step) against the bare nn.LSTM loop
               of bench_train.py, fp32 / tf32 / bf16 / fp16 (GradScaler), at the
               reference shape, a GPU-sized one (4 x 1024, batch 128, bptt 256) and
               charlstm's defaults (1 x 512, batch 16, bptt 64, auto precision); host
               syncs per step                                                        90 / 40
  quality      charlstm train on tinyshakespeare for 180 s with the defaults (--quick:
               5 s on the built-in corpus), then charlstm eval on its held-out last
               tenth (bench_quality.one_run): nats/char against the goal 1.45       235 / 45
  sampling     generate(): 1 sample and 64 samples at once, characters/s, the ratio 30 / 20
  long_range   charlstm experiment long-range --quick, wall time                    35 / 25

Host syncs are counted with torch.cuda.set_sync_debug_mode("warn"): every operation that makes
the host wait for the GPU (.item(), bool(tensor), a device-to-host copy, a pageable host-to-device
copy) raises a warning, and the warnings of a few steps are counted and divided by the steps.

Where the test data is not there: copy tinyshakespeare.txt to data/ (ignored by git)
and carry it, or pass --corpus. Without it the quality part is skipped, never run on another text.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

GLOBAL_DEADLINE_S = 470.0  # 8 minutes, less a margin for writing the report
QUICK_DEADLINE_S = 200.0  # a loaded 2-core machine; about 45 s on an idle one
# name -> (limit on a GPU run, limit with --quick), seconds; run in this order.
PARTS = {
    "machine": (20, 20),
    "cuda_tests": (75, 30),
    "throughput": (90, 40),
    "quality": (235, 45),
    "sampling": (30, 20),
    "long_range": (35, 25),
}
QUALITY_GOAL = 1.45  # nats/char on tinyshakespeare's last tenth after 180 s
RATIO_GOAL = 0.95  # charlstm's step / the bare cuDNN loop
BATCH_GAIN_GOAL = 30.0  # 64 samples' characters/s / one sample's
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
OPTIONAL = ("matplotlib", "tensorboard", "safetensors", "onnx", "hypothesis", "pytest")
REQUIRED = ("torch", "numpy", "click", "sentencepiece", "tqdm", "rich")


# ------------------------------------------------------------------------------ the orchestrator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and log.txt")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 5-second training (the test suite)")
    parser.add_argument("--corpus", type=Path, help="the text for the quality part [default: tinyshakespeare]")
    parser.add_argument("--part", choices=tuple(PARTS), help=argparse.SUPPRESS)  # one part, in its own process
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part:
        sys.exit(run_one_part(args))

    started = time.monotonic()
    deadline = started + (QUICK_DEADLINE_S if args.quick else GLOBAL_DEADLINE_S)
    (args.out / "parts").mkdir(exist_ok=True)
    log_path = args.out / "log.txt"
    log_path.write_text("")
    report: dict = {
        "schema": 1,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "device": args.device,
        "quick": args.quick,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "deadline_s": round(deadline - started),
        "parts": {},
    }
    for name, limits in PARTS.items():
        limit = min(limits[1] if args.quick else limits[0], deadline - time.monotonic())
        if limit < 1:
            report[name] = {"status": "timeout", "seconds": 0.0, "limit_s": 0.0, "error": "the global deadline had passed"}
        else:
            report[name] = run_part(name, args, limit, log_path)
        report["parts"][name] = report[name]["status"]
        log(log_path, f"{name}: {report[name]['status']} in {report[name]['seconds']:.1f} s (limit {limit:.0f} s)")
    report["wall_s"] = round(time.monotonic() - started, 1)
    report["goals"] = goals(report)
    write_json(args.out / "report.json", report)
    log(log_path, f"wrote {args.out / 'report.json'} in {report['wall_s']} s")
    print(summary(report))


def run_part(name: str, args, limit: float, log_path: Path) -> dict:
    """Run one part in its own process group, killed at ``limit`` seconds; what it wrote so far
    (DIR/parts/NAME.json) is its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(args.out),
           "--device", args.device, *(["--quick"] if args.quick else []),
           *(["--corpus", str(args.corpus)] if args.corpus else [])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    log(log_path, f"--- {name} (limit {limit:.0f} s)")
    start = time.monotonic()
    with open(log_path, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the part and everything it started
            proc.wait()
            status = "timeout"
    part_file = args.out / "parts" / f"{name}.json"
    result = json.loads(part_file.read_text()) if part_file.is_file() else {}
    if status == "ok" and result.get("status") == "skipped":
        status = "skipped"
    if status == "failed" and "error" not in result:
        result["error"] = f"exit status {rc}; see log.txt"
    result.update(status=status, seconds=round(time.monotonic() - start, 1), limit_s=round(limit, 1))
    return result


def goals(report: dict) -> dict:
    """The issue's three goals, each with the measured value (None: not measured) and whether it is met."""
    rows = [r for r in report.get("throughput", {}).get("rows", []) if r.get("ratio") is not None]
    reference = [r["ratio"] for r in rows if r["shape"] == "reference"]
    quality = report.get("quality", {}).get("eval_nats_per_char")
    gain = report.get("sampling", {}).get("ratio_64_to_1")

    def goal(value, target, higher_is_better):
        if value is None:
            return {"value": None, "goal": target, "met": None}
        return {"value": value, "goal": target, "met": value >= target if higher_is_better else value <= target}

    return {
        "train_step_ratio_reference_worst": goal(min(reference) if reference else None, RATIO_GOAL, True),
        "train_step_ratio_all_worst": goal(min(r["ratio"] for r in rows) if rows else None, RATIO_GOAL, True),
        "nats_per_char_180s": goal(quality, QUALITY_GOAL, False),
        "samples_64_vs_1": goal(gain, BATCH_GAIN_GOAL, True),
    }


def summary(report: dict) -> str:
    lines = [f"gpu_check on {report['device']}{' (quick)' if report['quick'] else ''}: {report['wall_s']} s"]
    for name, status in report["parts"].items():
        lines.append(f"  {name:<11} {status:<8} {report[name]['seconds']:>6.1f} s  {report[name].get('error', '')[:120]}")
    for name, g in report["goals"].items():
        lines.append(f"  goal {name}: {g['value']} (goal {g['goal']}, met: {g['met']})")
    return "\n".join(lines)


def log(path: Path, line: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    with open(path, "a") as f:
        f.write(f"[{stamp}] {line}\n")


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- the parts


class Part:
    """One part's results, written to DIR/parts/NAME.json after every change, so a part killed
    at its limit leaves what it had measured."""

    def __init__(self, out: Path, name: str):
        self.path = out / "parts" / f"{name}.json"
        self.path.parent.mkdir(exist_ok=True)
        self.data: dict = {}

    def set(self, **values) -> None:
        self.data.update(values)
        write_json(self.path, self.data)


def run_one_part(args) -> int:
    part = Part(args.out, args.part)
    try:
        globals()[f"part_{args.part}"](args, part)
        return 0
    except SystemExit as e:  # bench_quality's charlstm() exits with the failed command's stderr
        if e.code in (0, None):
            return 0
        part.set(error=str(e.code)[-500:])
        return 1
    except Exception as e:  # noqa: BLE001: a part's failure is a line in the report, not the end of the check
        traceback.print_exc()
        part.set(error=f"{type(e).__name__}: {str(e)[:500]}")
        return 1


def find_corpus(args) -> Path | None:
    """--corpus, else tinyshakespeare.txt from the test data (shared/data beside or inside the repository) or data/."""
    if args.corpus:
        return args.corpus
    for folder in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data", ROOT / "data"):
        if (folder / "tinyshakespeare.txt").is_file():
            return folder / "tinyshakespeare.txt"
    return None


def corpus_text(args) -> tuple[str, str]:
    """The text the speed parts train on and take their vocabulary from (--quick: 200,000
    characters of the built-in corpus)."""
    from charlstm.data.text import builtin_text

    if args.quick:
        return builtin_text()[:200_000], "built-in corpus (200,000 characters)"
    path = find_corpus(args)
    if path is not None and path.is_file():
        return path.read_text(encoding="utf-8"), path.name
    return builtin_text(), "built-in corpus"


def part_machine(args, part: Part) -> None:
    import torch
    from _common import machine

    from charlstm.hardware import resolve_precision

    info = machine()
    info.update(
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cuda_available=torch.cuda.is_available(),
    )
    part.set(**info)
    missing = [f"{name}: not installed (required)" for name in REQUIRED if importlib.util.find_spec(name) is None]
    missing += [f"{name}: not installed (optional; what needs it is skipped)" for name in OPTIONAL
                if importlib.util.find_spec(name) is None]
    part.set(missing_packages=missing)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA GPU here")
        props = torch.cuda.get_device_properties(0)
        part.set(
            gpu=props.name,
            gpu_count=torch.cuda.device_count(),
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            bf16_native=torch.cuda.is_bf16_supported(including_emulation=False),
            driver=nvidia_smi("driver_version"),
            nvidia_smi_gpu=nvidia_smi("name"),
            torch_defaults_tf32=tf32_settings(),
        )
    chosen = resolve_precision("auto", torch.device(args.device))
    part.set(precision_auto={"amp_dtype": str(chosen.amp_dtype), "scales_loss": chosen.scales_loss,
                             "description": chosen.description})


def nvidia_smi(field: str) -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def tf32_settings() -> dict:
    import torch

    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        return {"matmul": b.cuda.matmul.fp32_precision, "cudnn_rnn": b.cudnn.rnn.fp32_precision}
    return {"matmul_allow_tf32": b.cuda.matmul.allow_tf32, "cudnn_allow_tf32": b.cudnn.allow_tf32}


def set_tf32(on: bool) -> None:
    """TF32 for fp32 matrix products and cuDNN's RNN (the "tf32" row), or strict fp32 (the "fp32" row)."""
    import torch

    b = torch.backends
    if hasattr(b.cuda.matmul, "fp32_precision"):
        b.cuda.matmul.fp32_precision = "tf32" if on else "ieee"
        b.cudnn.rnn.fp32_precision = "tf32" if on else "ieee"
    else:
        b.cuda.matmul.allow_tf32 = on
        b.cudnn.allow_tf32 = on


# -------------------------------------------------------------------------------------- cuda tests

RESULT_LINE = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")


def part_cuda_tests(args, part: Part) -> None:
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures: list[str] = []
    messages: list[str] = []
    part.set(**counts, failures=failures, messages=messages)
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"))
    cmd = [sys.executable, "-m", "pytest", "-v", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    for line in proc.stdout:
        print(line, end="", flush=True)
        match = RESULT_LINE.match(line)
        if match:
            outcome = match.group(2)
            key = {"PASSED": "passed", "XPASS": "passed", "FAILED": "failed", "SKIPPED": "skipped",
                   "XFAIL": "skipped", "ERROR": "errors"}[outcome]
            counts[key] += 1
            if key in ("failed", "errors"):
                failures.append(match.group(1).split("::", 1)[1])
            part.set(**counts, failures=failures)
        elif line.startswith(("FAILED ", "ERROR ")) and " - " in line:
            messages.append(line.strip()[:400])  # pytest's one-line reason, from the short summary
            part.set(messages=messages)
    rc = proc.wait()
    part.set(pytest_exit=rc)
    if rc not in (0, 5) and not (counts["failed"] or counts["errors"]):
        raise RuntimeError(f"pytest exited with {rc} before reporting a result; see log.txt")


# -------------------------------------------------------------------------------------- throughput


def shapes(quick: bool) -> dict[str, dict]:
    from _common import REFERENCE

    if quick:
        return {
            "reference": dict(REFERENCE, embedding_dim=16, hidden_size=64, num_layers=1, batch_size=8, bptt=32),
            "gpu": dict(REFERENCE, embedding_dim=32, hidden_size=96, num_layers=2, batch_size=16, bptt=32),
            "defaults": dict(REFERENCE, embedding_dim=16, hidden_size=64, num_layers=1, batch_size=4, bptt=16),
        }
    return {
        "reference": dict(REFERENCE),
        "gpu": dict(REFERENCE, hidden_size=1024, num_layers=4, batch_size=128, bptt=256),
        # charlstm's own defaults (TrainConfig, ModelShape): is a batch of 16 latency-bound on a GPU?
        "defaults": dict(REFERENCE, embedding_dim=64, hidden_size=512, num_layers=1, batch_size=16, bptt=64),
    }


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_syncs(step, steps: int, device) -> tuple[float | None, list[str]]:
    """Host syncs per step of ``step`` (None on a CPU), and the distinct warnings seen."""
    import torch

    if device.type != "cuda":
        return None, []
    sync(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sync(device)
    seen = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
    return len(seen) / steps, sorted({m.splitlines()[0][:200] for m in seen})[:5]


def time_contenders(contenders: dict, tokens_per_step: int, device, rounds: int, block_s: float) -> dict:
    """Interleaved blocks of steps (as _common.interleave), synchronized, each contender's
    tokens/s per round; the steps per block are chosen from a warm-up so that a block takes
    about ``block_s``."""
    per_step = {}
    for name, step in contenders.items():  # warm-up: cuDNN's plans, autocast caches, the allocator
        step()
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        per_step[name] = time.perf_counter() - start
    steps = max(1, min(20, round(block_s / max(per_step.values()))))
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, step in contenders.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            sync(device)
            rates[name].append(steps * tokens_per_step / (time.perf_counter() - start))
    return {"steps_per_block": steps, "rates": rates}


def part_throughput(args, part: Part) -> None:
    import torch
    from bench_train import bare_step, charlstm_step

    from charlstm.errors import ConfigError
    from charlstm.hardware import resolve_precision

    device = torch.device(args.device)
    text, name = corpus_text(args)
    auto = resolve_precision("auto", device)
    auto_name = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[auto.amp_dtype]
    defaults_tf32 = tf32_settings() if device.type == "cuda" else None
    rows: list[dict] = []
    part.set(corpus=name, precision_auto=auto.description, rows=rows,
             sync_method='torch.cuda.set_sync_debug_mode("warn"), warnings counted over a few steps')
    rounds, block_s, sync_steps = (2, 0.1, 2) if args.quick else (3, 0.6, 3)
    for shape_name, shape in shapes(args.quick).items():
        if shape_name == "defaults":
            precisions = ("fp32",) if args.quick and device.type != "cuda" else (auto_name,)
        else:
            precisions = PRECISIONS
        for precision in precisions:
            row = {"shape": shape_name, **{k: v for k, v in shape.items() if k != "vocab_size"},
                   "precision": precision}
            if device.type != "cuda" and (precision == "tf32" or (args.quick and precision != "fp32")):
                why = "TF32 is a CUDA setting" if precision == "tf32" else "--quick on a CPU: fp32 only"
                rows.append(dict(row, skipped=why))
                part.set(rows=rows)
                continue
            try:
                if device.type == "cuda":
                    set_tf32(precision == "tf32")
                trainer_precision = "fp32" if precision == "tf32" else precision
                resolve_precision(trainer_precision, device)  # refuses what this device cannot run
                step, setup = charlstm_step(text, name, shape, trainer_precision, args.device)
                bare = bare_step(setup.tokenizer.vocab_size, shape, trainer_precision, args.device)
                tokens = shape["batch_size"] * shape["bptt"]
                timing = time_contenders({"charlstm": step, "bare": bare}, tokens, device, rounds, block_s)
                rates = timing["rates"]
                ratios = [a / b for a, b in zip(rates["charlstm"], rates["bare"])]
                charlstm_syncs, charlstm_seen = count_syncs(step, sync_steps, device)
                bare_syncs, _ = count_syncs(bare, sync_steps, device)
                row.update(
                    charlstm_tokens_per_s=round(statistics.median(rates["charlstm"])),
                    bare_tokens_per_s=round(statistics.median(rates["bare"])),
                    ratio=round(statistics.median(ratios), 4),
                    ratio_min=round(min(ratios), 4),
                    rounds=rounds,
                    steps_per_block=timing["steps_per_block"],
                    charlstm_syncs_per_step=charlstm_syncs,
                    bare_syncs_per_step=bare_syncs,
                    charlstm_sync_warnings=charlstm_seen,
                    trainer_precision=setup.precision.description,
                )
                if device.type == "cuda":
                    row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                del step, bare, setup
                gc.collect()  # the trainer's closures: free the GPU memory before the next row
            except ConfigError as e:
                row["skipped"] = str(e)
            except Exception as e:  # noqa: BLE001: one row's failure (out of memory, a kernel) is recorded
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
                traceback.print_exc()
            finally:
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats(device)
            rows.append(row)
            part.set(rows=rows)
            print(f"throughput {shape_name} {precision}: {row}", flush=True)
    if defaults_tf32 is not None:  # as PyTorch ships (charlstm's fp32 runs with these)
        part.set(torch_defaults_tf32=defaults_tf32)


# ------------------------------------------------------------------------------------------ quality


def part_quality(args, part: Part) -> None:
    from bench_quality import one_run

    budget = 5.0 if args.quick else 180.0
    with tempfile.TemporaryDirectory(prefix="gpu-check-quality-") as tmp:
        if args.quick:
            from charlstm.data.text import builtin_text

            corpus = Path(tmp) / "builtin.txt"
            corpus.write_text(builtin_text()[:200_000], encoding="utf-8")
            extra = ["--device", args.device, "--eval-every", "20", "--embedding-dim", "16",
                     "--hidden-size", "64", "--batch-size", "8", "--bptt", "32"]
        else:
            corpus = find_corpus(args)
            if corpus is None or not corpus.is_file():
                part.set(status="skipped", goal=QUALITY_GOAL, eval_nats_per_char=None,
                         error="tinyshakespeare.txt is not here (../shared/data, shared/data, data/): pass --corpus")
                return
            extra = ["--device", args.device]
        part.set(corpus=str(corpus), budget_s=budget, goal=QUALITY_GOAL, command_extra=extra)
        result = one_run(corpus, budget, "auto", 1337, False, Path(tmp), extra)
        run_dir = Path(tmp) / f"auto-{budget:g}-1337"
        config = json.loads((run_dir / "config.json").read_text())
        shutil.copy(run_dir / "config.json", args.out / "quality_config.json")
        shutil.copy(run_dir / "metrics.jsonl", args.out / "quality_metrics.jsonl")
    result.update(
        device=config["info"].get("device"),
        precision=config["info"].get("precision"),
        met=result["eval_nats_per_char"] <= QUALITY_GOAL,
    )
    part.set(**result)


# ----------------------------------------------------------------------------------------- sampling


def part_sampling(args, part: Part) -> None:
    import torch
    from bench_sample import generate_rate, reference_model

    from charlstm.data.tokenizers import CharTokenizer

    text, name = corpus_text(args)
    tok = CharTokenizer.train(text)
    model = reference_model(tok.vocab_size, args.device, shape="tiny" if args.quick else "reference")
    length, rounds = (100, 1) if args.quick else (1000, 3)
    part.set(shape="1 x 64 (--quick)" if args.quick else "2 x 512 (reference)", weights="untrained",
             vocabulary=name, length=length, rounds=rounds,
             method="charlstm generate (the TokenStepper; charlstm has no CUDA-graph path)")
    generate_rate(model, tok, 1, 20, args.device), generate_rate(model, tok, 64, 20, args.device)  # warm-up
    one = [generate_rate(model, tok, 1, length, args.device) for _ in range(rounds)]
    part.set(chars_per_s_1=round(statistics.median(one)))
    many = [generate_rate(model, tok, 64, length, args.device) for _ in range(rounds)]
    part.set(chars_per_s_64=round(statistics.median(many)),
             ratio_64_to_1=round(statistics.median(many) / statistics.median(one), 2), goal_ratio=BATCH_GAIN_GOAL)
    if args.device == "cuda":
        part.set(peak_memory_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2))


# --------------------------------------------------------------------------------------- long range


def part_long_range(args, part: Part) -> None:
    # The GPU figure is the documented --quick; a CPU check uses the smallest settings so the
    # test suite stays fast.
    options = ["--quick"] if not (args.quick and args.device == "cpu") else [
        "--quick", "--tasks", "recall", "--distances", "5", "--seeds", "1", "--budget", "20"]
    json_out = args.out / "long_range.json"
    json_out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "charlstm", "experiment", "long-range", *options, "--device", args.device,
           "--json", str(json_out)]
    part.set(command=["charlstm", *cmd[3:]])
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    print(done.stderr[-3000:], flush=True)
    part.set(wall_s=round(wall, 2), exit_status=done.returncode)
    if done.returncode != 0:
        raise RuntimeError(f"charlstm experiment long-range exited with {done.returncode}: {done.stderr.strip()[-300:]}")


if __name__ == "__main__":
    main()
