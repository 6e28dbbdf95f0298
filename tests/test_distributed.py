"""Data-parallel training on CPU with gloo: two processes on one machine."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from charlstm.config import ModelShape, TrainConfig
from charlstm.distributed import from_environment
from charlstm.training.setup import prepare_new
from charlstm.data.text import TextSource
from charlstm.training.trainer import Trainer
from tests.conftest import TINY_MODEL

pytestmark = pytest.mark.slow  # every test starts two processes (spawned ranks or torchrun)

OPTIONS = ModelShape(embedding_dim=8, hidden_size=16, num_layers=2, dropout=0.0)


def _trainer(text, config, out):
    """A Trainer through the public seams, in this process's place in torchrun's world."""
    return Trainer(prepare_new(TextSource.from_text(text, "t", "t"), config, OPTIONS, out=out, dist=from_environment("cpu")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step(text, batch_size, out):
    config = TrainConfig(batch_size=batch_size, bptt=16, device="cpu", clip=1e9, seed=5, precision="fp32")
    trainer = _trainer(text, config, out)
    trainer.train_step(trainer.data.windows[0], None)
    return {name: p.grad.clone() for name, p in trainer.model.named_parameters()}


def _join(rank, world_size, port):
    """Be rank ``rank`` of a local world, as torchrun's environment would say."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def _leave():
    """Meet at a barrier, then tear the group down (as ``charlstm.distributed.shutdown`` does): a
    rank that destroyed its group while the other still used it aborted the other at exit once
    ("terminate called without an active exception")."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def _rank_main(rank, world_size, port, text, out, results):
    _join(rank, world_size, port)
    grads = _one_step(text, 4, out)
    torch.save(grads, results / f"grads{rank}.pt")
    _leave()


def test_two_ranks_of_b_streams_give_the_gradients_of_one_process_with_2b(tmp_path, small_text):
    text = small_text[:2000]  # 1,800 training tokens: two shards of 900, each 4 streams of 225
    mp.start_processes(
        _rank_main, args=(2, _free_port(), text, tmp_path / "ddp", tmp_path), nprocs=2, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"grads{r}.pt", weights_only=True) for r in (0, 1)]
    single = _one_step(text, 8, tmp_path / "single")
    for name, grad in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name])  # DDP gave both ranks the same average
        assert torch.allclose(ranks[0][name], grad, rtol=1e-4, atol=1e-6), name


def _poisoned_rank_main(rank, world_size, port, text, out, results):
    """Rank 1's loss is NaN on the first step; rank 0's is fine."""
    _join(rank, world_size, port)
    config = TrainConfig(batch_size=4, bptt=16, device="cpu", seed=5)
    trainer = _trainer(text, config, out)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    forward = trainer.model.forward

    def poisoned(x, hidden=None):
        logits, hidden = forward(x, hidden)
        return (logits * float("nan") if rank == 1 else logits), hidden

    trainer.model.forward = poisoned
    trainer.train_step(trainer.data.windows[0], None)
    unchanged = all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    torch.save({"unchanged": unchanged, "bad_steps": list(trainer.bad_steps)}, results / f"poison{rank}.pt")
    _leave()


def test_a_non_finite_loss_on_one_rank_skips_the_step_on_all(tmp_path, small_text):
    mp.start_processes(
        _poisoned_rank_main,
        args=(2, _free_port(), small_text[:2000], tmp_path / "ddp", tmp_path),
        nprocs=2,
        start_method="spawn",
    )
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"poison{rank}.pt", weights_only=True)
        assert seen == {"unchanged": True, "bad_steps": [1]}, rank


def _torchrun(*args, cwd):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "charlstm",
        ]
        + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )


def _charlstm(*args):
    return subprocess.run(
        [sys.executable, "-m", "charlstm", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_torchrun_run_writes_one_checkpoint_that_a_single_process_uses(tmp_path, text_file):
    run_dir = tmp_path / "run"
    result = _torchrun(
        "train",
        text_file,
        "--out",
        run_dir,
        *TINY_MODEL,
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data parallel: 2 processes (gloo) x batch 4 = global batch 8 streams" in result.stderr
    assert result.stderr.count("charlstm train") == 1  # one summary: rank 0's
    info = json.loads((run_dir / "config.json").read_text())["info"]
    assert info["world_size"] == 2 and info["global_batch"] == 8
    assert sorted(p.name for p in run_dir.iterdir() if p.suffix == ".pt") == ["best.pt", "last.pt"]

    sample = _charlstm("sample", run_dir, "--length", "20", "--seed", "0")
    assert sample.returncode == 0 and len(sample.stdout) == 21, sample.stderr
    evaluated = _charlstm("eval", run_dir, text_file, "--json")
    assert evaluated.returncode == 0 and json.loads(evaluated.stdout)["tokens"] == len(text_file.read_text())

    refused = _charlstm("train", "--resume", run_dir, "--max-steps", "6")
    assert refused.returncode == 2 and "trained with 2" in refused.stderr
    resumed = _torchrun("train", "--resume", run_dir, "--max-steps", "6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = torch.load(run_dir / "last.pt", weights_only=True)["train_state"]
    assert state["step"] == 6 and len(state["hidden_by_rank"]) == 2


def test_a_signal_to_one_rank_stops_all_of_them_with_one_checkpoint(tmp_path, text_file):
    import signal
    import time
    from pathlib import Path

    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "charlstm", "train", str(text_file), "--out", str(run_dir), *TINY_MODEL]
    command += ["--max-steps", "1000000", "--eval-every", "1000000"]
    agent = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    deadline = time.time() + 120
    while not (run_dir / "config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # some steps
    workers = [
        int(pid)
        for pid in Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        if b"charlstm" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    ranks = {}
    for pid in workers:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        ranks[next(int(e[5:]) for e in env if e.startswith(b"RANK="))] = pid
    os.kill(ranks[1], signal.SIGTERM)  # not rank 0, the one that writes: it must hear of it
    _, stderr = agent.communicate(timeout=120)  # no deadlock: every rank stops
    assert "checkpoint saved" in stderr, stderr[-3000:]
    state = torch.load(run_dir / "last.pt", weights_only=True)["train_state"]
    assert state["step"] > 0 and len(state["hidden_by_rank"]) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_step(tmp_path, small_text):
    config = TrainConfig(batch_size=4, bptt=16, device="cuda", max_steps=3, eval_every=3)
    trainer = _trainer(small_text, config, tmp_path / "gpu")
    result = trainer.run()
    assert result.steps == 3 and next(trainer.model.parameters()).is_cuda
