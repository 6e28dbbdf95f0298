"""Where the model runs and in what precision: ``--device`` and ``--precision``."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from charlstm.errors import ConfigError


def select_device(name: str) -> torch.device:
    """The torch device for ``--device``: auto picks a CUDA GPU, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix hardware (AMX-bf16 or AVX-512-bf16)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in cpuinfo or "avx512_bf16" in cpuinfo


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: ``amp_dtype`` is the autocast type (None: plain fp32).
    Weights, optimizer state and the loss stay fp32 in every case."""

    amp_dtype: torch.dtype | None
    description: str  # what was chosen, and why (shown at the start of training)

    @property
    def scales_loss(self) -> bool:
        """fp16 needs its loss scaled so small gradients do not underflow; bf16 and fp32 do not."""
        return self.amp_dtype == torch.float16

    def autocast(self, device: torch.device):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)


FP32 = Precision(None, "fp32")


def cuda_capability(device: torch.device) -> tuple[int, int]:
    """The GPU's compute capability, such as (8, 0) for an A100 or (9, 0) for an H100."""
    return torch.cuda.get_device_capability(device)


def _auto_cuda_precision(device: torch.device) -> Precision:
    # torch.cuda.is_bf16_supported() also says yes on GPUs that only emulate bf16 (7.x), where
    # it runs slower than fp32: only native bf16 (8.0 on) counts for auto.
    major, minor = cuda_capability(device)
    if major >= 8 and torch.cuda.is_bf16_supported(including_emulation=False):
        return Precision(
            torch.bfloat16, f"bf16 autocast (auto: the GPU runs bf16, compute capability {major}.{minor})"
        )
    if major >= 7:
        return Precision(
            torch.float16,
            f"fp16 autocast with gradient scaling (auto: the GPU has fp16 tensor cores but no bf16, "
            f"compute capability {major}.{minor})",
        )
    return Precision(None, f"fp32 (auto: the GPU has no fast fp16 or bf16, compute capability {major}.{minor})")


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The precision for ``--precision`` on ``device``.

    ``auto`` takes bf16 where the hardware runs it fast (CUDA GPUs with bf16 units: compute
    capability 8.0 or newer, A100/H100/RTX 30xx on; CPUs with AMX or AVX-512-bf16), fp16 with
    gradient scaling on GPUs with fp16 tensor cores but no bf16 (7.x: V100, T4, RTX 20xx), fp32
    otherwise (older GPUs, where fp16 is slow and bf16 only emulated).
    ``benchmarks/gpu_check.py`` records what ``auto`` picked next to the measured rows.
    """
    if name == "fp32":
        return FP32
    if device.type == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        if name == "auto":
            return _auto_cuda_precision(device)
        if name == "bf16" and not bf16_ok:
            raise ConfigError("--precision bf16: this GPU does not support bf16; use fp16, fp32 or auto")
        return Precision(torch.bfloat16 if name == "bf16" else torch.float16, f"{name} autocast")
    if device.type == "cpu":
        fast = cpu_has_fast_bf16()
        if name == "auto":
            if fast:
                return Precision(torch.bfloat16, "bf16 autocast (auto: the CPU has AMX or AVX-512-bf16)")
            return Precision(None, "fp32 (auto: this CPU has no bf16 hardware, AMX or AVX-512-bf16)")
        if name == "fp16":
            raise ConfigError("--precision fp16 is for CUDA GPUs; on a CPU use bf16, fp32 or auto")
        if not fast:
            raise ConfigError(
                "--precision bf16: this CPU has no bf16 hardware (AMX or AVX-512-bf16), where "
                "PyTorch's LSTM cannot run in bf16; use --precision fp32 or auto"
            )
        return Precision(torch.bfloat16, "bf16 autocast")
    if name == "auto":
        return FP32
    raise ConfigError(f"--precision {name} is not supported on {device.type}; use fp32 or auto")
