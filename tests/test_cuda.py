"""charlstm on a CUDA GPU: training in every precision, a bitwise resume, sampling, eval, inspect,
and a checkpoint that goes from the GPU to a CPU-only process and back.

Every test here is marked ``cuda`` and skipped where torch sees no GPU (tests/conftest.py);
``benchmarks/gpu_check.py`` runs them (``pytest -m cuda tests/test_cuda.py``) on a GPU machine.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys

# cuBLAS is deterministic only with a fixed workspace, set before its first call in the process.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest  # noqa: E402
import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from charlstm.config import ModelShape, TrainConfig  # noqa: E402
from charlstm.data.text import TextSource  # noqa: E402
from charlstm.training.trainer import TrainingEvents, resume, train  # noqa: E402

pytestmark = pytest.mark.cuda
DEVICE = "cuda"
# Two layers: cuDNN's multi-layer kernel, with dropout between the layers (its own random numbers).
SHAPE = ModelShape(embedding_dim=16, hidden_size=32, num_layers=2, dropout=0.1)


def options(**changes) -> dict:
    return {"batch_size": 8, "bptt": 32, "device": DEVICE, "seed": 5, **changes}


def cli(*args):
    """``charlstm ARGS`` in this process (the GPU is set up once for all the tests)."""
    from charlstm.cli import cli as group

    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def cpu_only(*args, timeout=120) -> subprocess.CompletedProcess:
    """The real command in a process that sees no GPU, as on a machine without one."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-m", "charlstm", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


class Recorder(TrainingEvents):
    """Every step's loss; SIGINT to this process after ``interrupt_at`` steps (a user's Ctrl-C)."""

    def __init__(self, interrupt_at=None):
        self.losses: dict[int, float] = {}
        self.interrupt_at = interrupt_at

    def on_step(self, step, train_loss, tokens_per_s, elapsed):
        self.losses[step] = float(train_loss)
        if step == self.interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory, small_text):
    """A tiny model trained on the GPU for 40 steps, --precision auto."""
    out = tmp_path_factory.mktemp("gpu") / "run"
    source = TextSource.from_text(small_text, "small", "small")
    return train(source, TrainConfig(**options(max_steps=40, eval_every=20)), SHAPE, out=out)


@pytest.fixture
def text_path(tmp_path, small_text):
    path = tmp_path / "held_out.txt"
    path.write_text(small_text[-3000:], encoding="utf-8")
    return path


def test_training_on_the_gpu_records_device_and_precision(gpu_run):
    from charlstm.hardware import resolve_precision

    config = json.loads((gpu_run.run_dir / "config.json").read_text())
    assert config["info"]["device"].startswith(DEVICE)
    assert config["info"]["precision"] == resolve_precision("auto", torch.device(DEVICE)).description
    assert gpu_run.steps == 40 and gpu_run.stop_reason == "max_steps"
    losses = [m["val_loss"] for m in gpu_run.metrics]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses) and losses[1] < losses[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_each_precision_trains_on_the_gpu(tmp_path, small_text, precision):
    """fp16 runs with the trainer's GradScaler; every precision leaves the first-step loss behind."""
    events = Recorder()
    source = TextSource.from_text(small_text, "small", "small")
    result = train(source, TrainConfig(**options(max_steps=60, eval_every=60, precision=precision)), SHAPE,
                   out=tmp_path / precision, events=events)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["info"]["precision"] == ("fp32" if precision == "fp32" else f"{precision} autocast")
    assert all(math.isfinite(v) for v in events.losses.values())
    assert result.best_val_loss < events.losses[1] - 0.5, (events.losses[1], result.best_val_loss)


@pytest.mark.parametrize("precision, num_layers", [("fp32", 1), ("auto", 1), ("fp32", 2)])
def test_resume_on_the_gpu_is_bitwise_identical(tmp_path, small_text, monkeypatch, precision, num_layers):
    """Interrupted at step 9 and resumed, a run repeats the uninterrupted one bit for bit: the
    GPU's random state (dropout), the carried state and the optimizer all come back. cuDNN is
    asked for its deterministic kernels, as anyone comparing runs bit for bit must.

    Two layers add the dropout between them, which cuDNN draws from its own state (seeded once
    per process from the CUDA generator, then kept inside cuDNN): the case most likely to break."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    source = TextSource.from_text(small_text[:6000], "t", "t")
    config = options(max_steps=24, eval_every=8, precision=precision)
    shape = ModelShape(**{**SHAPE.to_dict(), "num_layers": num_layers})
    whole = Recorder()
    train(source, TrainConfig(**config), shape, out=tmp_path / "whole", events=whole)
    first = Recorder(interrupt_at=9)
    stopped = train(source, TrainConfig(**config), shape, out=tmp_path / "split", events=first)
    assert stopped.stop_reason == "SIGINT" and stopped.steps == 9
    second = Recorder()
    resumed = resume(tmp_path / "split", source, events=second)
    assert resumed.steps == 24
    assert {**first.losses, **second.losses} == whole.losses  # every step, bit for bit
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True, map_location="cpu")["model"]
    b = torch.load(tmp_path / "split" / "last.pt", weights_only=True, map_location="cpu")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_on_the_gpu(gpu_run):
    code, out, err = cli("sample", gpu_run.run_dir, "--device", DEVICE, "--seed", "3", "--length", "120",
                         "--num-samples", "4", "--json")
    assert code == 0, err
    samples = [json.loads(line) for line in out.splitlines()]
    assert len(samples) == 4 and all(s["seed"] == 3 for s in samples)
    again = cli("sample", gpu_run.run_dir, "--device", DEVICE, "--seed", "3", "--length", "120",
                "--num-samples", "4", "--json")
    assert [json.loads(line)["text"] for line in again[1].splitlines()] == [s["text"] for s in samples]
    code, greedy, err = cli("sample", gpu_run.run_dir, "--device", DEVICE, "--temperature", "0", "--length", "80",
                            "--prime", "The ")
    assert code == 0 and greedy.startswith("The ") and len(greedy.rstrip("\n")) >= 80, err


def test_eval_on_the_gpu_matches_the_cpu(gpu_run, text_path):
    """The same figures on either device (cuDNN may use TF32 for fp32, hence the tolerance)."""
    code, out, err = cli("eval", gpu_run.run_dir, text_path, "--device", DEVICE, "--json")
    assert code == 0, err
    code, cpu_out, err = cli("eval", gpu_run.run_dir, text_path, "--device", "cpu", "--json")
    assert code == 0, err
    gpu, cpu = json.loads(out), json.loads(cpu_out)
    assert gpu["chars"] == cpu["chars"] == 3000
    assert abs(gpu["bits_per_char"] - cpu["bits_per_char"]) < 5e-3, (gpu["bits_per_char"], cpu["bits_per_char"])


@pytest.mark.parametrize("depth", ["4", "64"])
def test_eval_adapt_on_the_gpu_matches_the_cpu(gpu_run, text_path, depth):
    """Dynamic evaluation on either device: by hand (depth 4) and through cuDNN's backward (the
    whole segment), lr and decay tuned as it reads (--adapt-tune's default). Adapting compounds
    rounding, hence the wider tolerance."""
    figures, tuned = {}, {}
    for device in (DEVICE, "cpu"):
        code, out, err = cli("eval", gpu_run.run_dir, text_path, "--device", device, "--json", "--adapt",
                             "--adapt-depth", depth)
        assert code == 0, err
        adapted = json.loads(out)["adapted"]
        figures[device], tuned[device] = adapted["bits_per_char"], adapted["tuned_lr"]
    assert abs(figures[DEVICE] - figures["cpu"]) < 2e-2, figures
    assert tuned[DEVICE] == pytest.approx(tuned["cpu"], rel=0.1) and tuned["cpu"] != 0.002, tuned


def test_inspect_a_gpu_trained_run(gpu_run):
    code, out, err = cli("inspect", gpu_run.run_dir, "--text", 'He said "yes" (twice).\nAnd then no.')
    assert code == 0, err
    assert "gate saturation" in out and "top 5 next tokens" in out


def test_a_checkpoint_goes_from_the_gpu_to_a_cpu_and_back(gpu_run, tmp_path, text_path, small_text):
    """Trained on the GPU: sampled, evaluated and resumed by a process that sees no GPU, then
    resumed on the GPU again from what that CPU run saved."""
    from charlstm.runs.checkpoint import load_checkpoint, model_from_checkpoint

    run = tmp_path / "run"
    shutil.copytree(gpu_run.run_dir, run)
    payload = load_checkpoint(run)
    on_cpu, tokenizer = model_from_checkpoint(payload, "cpu")
    on_gpu, _ = model_from_checkpoint(payload, DEVICE)
    ids = torch.as_tensor(tokenizer.encode("ROMEO: what say you?")).long().view(-1, 1)  # (T, 1)
    with torch.no_grad():
        cpu_logits = on_cpu.eval()(ids)[0]
        gpu_logits = on_gpu.eval()(ids.to(DEVICE))[0].cpu()
    assert torch.allclose(cpu_logits, gpu_logits, atol=2e-2, rtol=2e-2)

    sampled = cpu_only("sample", run, "--device", "cpu", "--length", "50", "--seed", "1")
    assert sampled.returncode == 0 and len(sampled.stdout) >= 50, sampled.stderr
    scored = cpu_only("eval", run, text_path, "--device", "cpu", "--json")
    assert scored.returncode == 0 and json.loads(scored.stdout)["chars"] == 3000, scored.stderr
    trained_on = tmp_path / "small.txt"
    trained_on.write_text(small_text, encoding="utf-8")
    on_cpu_run = cpu_only("train", trained_on, "--resume", run, "--max-steps", "50", "--device", "cpu", "--no-samples")
    assert on_cpu_run.returncode == 0, on_cpu_run.stderr
    assert load_checkpoint(run, prefer=("last.pt",))["train_state"]["step"] == 50

    back = resume(run, TextSource.from_text(small_text, "small", "small"), changes={"device": DEVICE, "max_steps": 60})
    assert back.steps == 60 and math.isfinite(back.last_val_loss)
    config = json.loads((run / "config.json").read_text())
    assert config["info"]["device"].startswith(DEVICE)
