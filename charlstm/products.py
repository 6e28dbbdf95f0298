"""One weight matrix's product with a few rows, ``x @ W^T``, with the matrix held as ``--weights``
says: the one-token stepper's (``stepper.TokenStepper``) and a window's by hand (``evaluation.backprop``).
"""

from __future__ import annotations

import functools
import warnings

import torch

from charlstm.errors import ConfigError

# fp32 weights on the CPU are multiplied by oneDNN from a copy laid out for it once
# (``_reorder_linear_weight``; the batch size it is laid out for is a hint, and this one served
# 1 to 64 rows as well as an exact one). A 512 x 2048 product of 9 rows took 61 us against 306 us
# by ``addmm`` on an AMD EPYC (Zen 4), where ``addmm``'s small products are slow; 1 row: 38 us
# against 58 us. But each oneDNN call costs about 16 us whatever its size, so a product of fewer
# than ``ONEDNN_MIN_WORK`` rows x weights goes to ``addmm`` (a 97 x 512 output projection, 1 row:
# 4 us against 18; 256 x 1024, 1 row: 14 against 24, 8 rows: 96 against 34).
PACK_ROWS_HINT = 64
ONEDNN_MIN_WORK = 1 << 20


def _onednn_pack(weight: torch.Tensor):
    """``weight`` (N, K) laid out for oneDNN's fp32 product, or None where that is unavailable."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), PACK_ROWS_HINT)
    except (AttributeError, RuntimeError):
        return None


class Product:
    """``x @ W^T`` for one weight matrix ``W`` (N, K), added in fp32 to a (B, N) tensor, with ``W``
    held as ``weights`` says (fp32, int8 or bf16: ``stepper.WEIGHT_FORMATS``). The weights are
    copied: build it again if they change."""

    def __init__(self, weight: torch.Tensor, weights: str = "fp32"):
        self.weights = weights  # fp32, int8 or bf16 (``stepper.WEIGHT_FORMATS``), checked by the caller
        weight = weight.detach()
        self.out_features = weight.size(0)
        self.numel = weight.numel()
        self.onednn = _onednn_pack(weight) if weights == "fp32" else None
        self.weight = None
        if weights == "int8":
            if weight.device.type != "cpu":
                raise ConfigError(f"--weights int8 runs on the CPU only (the model is on {weight.device.type})")
            self.packed = _prepack_int8(weight.float())
        elif self.onednn is None or self.numel < ONEDNN_MIN_WORK:  # a row at a time goes to addmm
            dtype = torch.bfloat16 if weights == "bf16" else weight.dtype
            self.weight = weight.t().contiguous().to(dtype)  # (K, N): a row of x reads it in order

    def _by_onednn(self, rows: int) -> bool:
        return self.onednn is not None and (self.weight is None or rows * self.numel >= ONEDNN_MIN_WORK)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W^T`` (B, N) for ``x`` (B, K), a new tensor."""
        if self._by_onednn(x.size(0)):
            return torch.ops.mkldnn._linear_pointwise(x, self.onednn, None, "none", [], "")
        if self.weights == "int8":
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)
        out = x.new_empty(x.size(0), self.out_features)
        return self.add_to(out, x, torch.zeros((), dtype=out.dtype, device=out.device))

    def add_to(self, out: torch.Tensor, x: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """``out = base + x @ W^T`` (``base`` None: ``out`` itself): ``x`` (B, K), ``out`` (B, N);
        ``base`` broadcasts to ``out``."""
        base = out if base is None else base
        if self._by_onednn(x.size(0)):
            return torch.add(base, self(x), out=out)
        if self.weights == "fp32":
            return torch.addmm(base, x, self.weight, out=out)
        if self.weights == "int8":
            return torch.add(base, self(x), out=out)  # (B, N)
        return torch.add(base, torch.mm(x.to(torch.bfloat16), self.weight), out=out)  # bf16 product, fp32 sum


@functools.cache
def int8_available() -> bool:
    """Whether this build of PyTorch has the quantized CPU kernels ``--weights int8`` needs."""
    try:
        _prepack_int8(torch.ones(2, 2))
    except ConfigError:
        return False
    return True


def _prepack_int8(weight: torch.Tensor):
    """``weight`` (N, K) as int8 with one symmetric scale per row, packed for fbgemm."""
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127  # (N,)
    zero = torch.zeros(weight.size(0), dtype=torch.long)
    try:
        with warnings.catch_warnings():  # the quantized tensor types are deprecated; the kernels are not
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight.contiguous(), scale.double(), zero, 0, torch.qint8)
            return torch.ops.quantized.linear_prepack(q, None)
    except (RuntimeError, AttributeError, NotImplementedError) as e:
        raise ConfigError(f"--weights int8 needs PyTorch's quantized CPU kernels, which this build lacks ({e})") from None
