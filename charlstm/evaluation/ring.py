"""The neural cache's ring of states held in low precision, and its product with a segment's
queries: ``evaluation.cache``'s fast product.

    bits[i, t] = q_t . h_i - shift_t     (theta / ln 2 folded into q_t: in bits, for exp2)

It is held as the hardware multiplies fastest (``fast_kind``):

    int8  an x86 CPU (oneDNN's quantised product; VNNI where the CPU has it): the ring as unsigned
          bytes, 127 h + 128 (an LSTM's or GRU's outputs lie in (-1, 1)), each query row as signed
          bytes with a scale of its own, the shift as the product's bias. The sums are integers,
          so the product is exact for its inputs and the same on every such CPU; its error is the
          rounding of h to 1/254 and of each query to 1/254 of its largest element.
    bf16  a CUDA GPU: the ring with a column of ones, -shift in the query's matching column.
    fp32  elsewhere, the same layout in float32.

The output is bf16 for int8 and bf16 (the exponent comes next, and the ring's tokens are
multiplied by it in bf16), float32 for fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The ring's bytes: h in (-1, 1) as round(127 h) + 128.
RING_SCALE = 1.0 / 127
RING_ZERO = 128


def fast_kind(device: torch.device) -> str:
    """int8, bf16 or fp32: how the ring is held and multiplied on ``device`` (the module docstring)."""
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu" and _has_int8_product():
        return "int8"
    return "fp32"


def _has_int8_product() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        torch.ops.onednn.qlinear_pointwise  # noqa: B018 (present in x86 builds of torch)
        torch.ops.onednn.qlinear_prepack  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return True


@dataclass
class Query:
    """A segment's rows prepared for ``LowRing.bits``; ``shift`` (T,) float32 is the shift as the
    product applies it (a bf16 or fp32 ring rounds it to its own type)."""

    shift: torch.Tensor
    rows: int


@dataclass
class Int8Query(Query):
    """The rows as signed bytes laid out for oneDNN, each with a scale of its own."""

    packed: torch.Tensor  # the query's bytes, prepacked
    scales: torch.Tensor  # (T,) each row's scale
    zeros: torch.Tensor  # (T,) each row's zero point (0)
    bias: torch.Tensor  # (T,) -shift


@dataclass
class FloatQuery(Query):
    """The rows in the ring's float type, -shift in the ring's column of ones."""

    right: torch.Tensor  # (H_pad, T)


class LowRing:
    """``size`` slots of ``hidden`` states in the kind ``fast_kind`` chose, written as the cache's ring is."""

    def __init__(self, size: int, hidden: int, device: torch.device, kind: str) -> None:
        self.kind, self.hidden = kind, hidden
        self.dtype = torch.float32 if kind == "fp32" else torch.bfloat16  # what ``bits`` returns
        if kind == "int8":
            self.data = torch.full((size, hidden), RING_ZERO, dtype=torch.uint8, device=device)
        else:
            self.data = torch.zeros(size, -(-(hidden + 1) // 32) * 32, dtype=self.dtype, device=device)
            self.data[:, hidden] = 1.0

    def write(self, slots: torch.Tensor, states: torch.Tensor) -> None:
        """Put ``states`` (n, hidden), float32, into ``slots`` (n,)."""
        if self.kind == "int8":
            quantised = states.mul(127).round_().clamp_(-127, 127).add_(RING_ZERO).to(torch.uint8)
            self.data.index_copy_(0, slots, quantised)
        else:
            self.data[:, : self.hidden].index_copy_(0, slots, states.to(self.dtype))

    def query(self, rows: torch.Tensor, shift: torch.Tensor) -> Query:
        """``rows`` (T, hidden) float32, theta / ln 2 folded in, and ``shift`` (T,) in bits."""
        if self.kind == "int8":
            scales = rows.abs().amax(dim=-1).clamp_min_(1e-12) / 127  # (T,)
            quantised = (rows / scales[:, None]).round_().to(torch.int8)
            packed = torch.ops.onednn.qlinear_prepack(quantised, None)
            zeros = torch.zeros(len(rows), dtype=torch.int32, device=rows.device)
            shift = shift.float().contiguous()
            return Int8Query(shift, len(rows), packed=packed, scales=scales, zeros=zeros, bias=-shift)
        right = torch.zeros(self.data.size(1), len(rows), dtype=self.dtype, device=rows.device)  # (H_pad, T)
        right[: self.hidden] = rows.T.to(self.dtype)
        right[self.hidden] = (-shift).to(self.dtype)
        return FloatQuery(-right[self.hidden].float(), len(rows), right=right)

    def bits(self, query: Query, a: int, b: int) -> torch.Tensor:
        """(b - a, T): q_t . h_i - shift_t for the ring's slots a to b and each row t of ``query``."""
        if isinstance(query, FloatQuery):
            return self.data[a:b] @ query.right
        return torch.ops.onednn.qlinear_pointwise(
            self.data[a:b], RING_SCALE, RING_ZERO, query.packed, query.scales, query.zeros, query.bias,
            1.0, 0, self.dtype, "none", [], "",
        )
