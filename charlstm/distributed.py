"""Data-parallel training with PyTorch's own engine: torchrun + DistributedDataParallel.

Under ``torchrun`` every process runs ``charlstm train`` with the same arguments; torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) says which one it is, and this
module is the only reader of it. The backend is NCCL on GPUs and gloo on CPUs. Without torchrun,
``Dist`` is a world of one and every method here is a no-op, so the single-process path pays
nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from charlstm.errors import CharlstmError


def world_size_from_environment() -> int:
    """How many processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """False in the torchrun processes other than rank 0: they train but print nothing."""
    return os.environ.get("RANK", "0") == "0"


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run directory, checkpoints, metrics and progress; the others only train."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over all ranks (in place), for validation losses and token counts."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max(self, value: int, device: torch.device) -> int:
        """The largest ``value`` over all ranks: how ranks agree on stopping together."""
        if not self.enabled:
            return value
        t = torch.tensor([value], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (small Python objects: a tokenizer state, a path)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Every rank's ``tensors`` (same shapes on every rank), indexed by rank."""
        if not self.enabled:
            return [tensors]
        out = []
        for t in tensors:
            parts = [torch.empty_like(t) for _ in range(self.world_size)]
            dist.all_gather(parts, t.contiguous())
            out.append(parts)
        return [[parts[r] for parts in out] for r in range(self.world_size)]

    def gather_carried(self, hidden, template, device: torch.device) -> tuple[list, list]:
        """Every rank's carried hidden state (None where there is none) and torch RNG state,
        indexed by rank, on the CPU: what a checkpoint keeps so each rank resumes exactly.
        ``template``: a hidden state of this rank's shape (``model.init_hidden(batch_size)``)."""
        if not self.enabled:
            return [None if hidden is None else [t.detach().cpu() for t in hidden]], [torch.get_rng_state()]
        # All ranks must send tensors of one shape: a rank without a carried state sends NaNs.
        stacked = torch.stack(list(hidden if hidden is not None else template)).to(device)
        if hidden is None:
            stacked = torch.full_like(stacked, float("nan"))
        gathered = self.gather([stacked, torch.get_rng_state().to(device)])
        hidden_by_rank = [None if torch.isnan(h).all() else [t.cpu() for t in h] for h, _ in gathered]
        return hidden_by_rank, [r.cpu() for _, r in gathered]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def on_main(self, work, share: bool = True):
        """``work()`` on rank 0 only; its result on every rank when ``share`` (plain data only:
        a memory map does not travel), else None on the others. A user error raised there is
        raised on every rank, so no process waits for one that has given up."""
        result = error = None
        if self.is_main:
            try:
                result = work()
            except CharlstmError as e:
                error = e
        if self.enabled:
            shared, error = self.broadcast((result if share and error is None else None, error))
            if not self.is_main:
                result = shared
        if error is not None:
            raise error
        return result


def from_environment(device_name: str) -> Dist:
    """Join the process group torchrun set up, if any (a world of one otherwise)."""
    world_size = world_size_from_environment()
    if world_size <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(rank, world_size, local_rank, backend)


def device_for(context: Dist, device: torch.device) -> torch.device:
    """Each process drives its own GPU (LOCAL_RANK); CPU processes share the CPU."""
    if device.type == "cuda" and context.enabled:
        return torch.device("cuda", context.local_rank)
    return device


def shutdown(context: Dist) -> None:
    """Tear down the process group. When training ended normally (no exception in flight), the
    ranks first meet at a barrier: a rank that destroyed its group while another still sent to it
    could abort at exit ("terminate called without an active exception", seen once in six
    torchrun test runs). Bounded, so a rank that died cannot hold the others for long."""
    if context.enabled and dist.is_initialized():
        if sys.exc_info()[0] is None:
            try:
                if dist.get_backend() == "gloo":
                    dist.monitored_barrier(timeout=timedelta(seconds=60))
                else:
                    dist.barrier()
            except Exception:  # another rank is gone: nothing to wait for
                pass
        dist.destroy_process_group()
