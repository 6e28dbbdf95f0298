"""The layer-normalised LSTM's recurrence in C++ (``ln_recurrence.cpp``): built on first use by
torch's extension builder into its cache (``~/.cache/torch_extensions``, about 30 s once), with
``-march=native``, so the build is named for this CPU's instruction set (a home directory shared by
two machines keeps one build for each). Where it cannot be built (no C++ compiler or ninja, a
failed build) or the layer is not on the CPU, ``LNLSTM`` runs the same equations in Python, about
a third as fast; ``status`` says which and why.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sysconfig
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("ln_recurrence.cpp")
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]
LINK = ["-lmvec"]  # glibc's vectorised tanhf


@dataclass(frozen=True)
class KernelStatus:
    """Whether the C++ recurrence is in use, and if not, why (one line for people)."""

    built: bool
    reason: str = ""


_lock = threading.Lock()
_calls = threading.Lock()  # the kernel keeps its buffers between calls: one call at a time
_kernel = None
_status: KernelStatus | None = None


def compiler_available() -> bool:
    """Whether this machine can build ``ln_recurrence.cpp``: a C++ compiler, ninja and Python's
    headers (Debian: g++, ninja-build, python3-dev)."""
    from torch.utils.cpp_extension import is_ninja_available

    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return is_ninja_available() and any(shutil.which(c) for c in ("c++", "g++", "clang++")) and headers.is_file()


def _cpu_tag() -> str:
    """A short name for this CPU's instruction set: the build is for ``-march=native``."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    seen = flags or platform.processor() or platform.machine()
    return hashlib.sha256(seen.encode()).hexdigest()[:10]


def _name() -> str:
    return f"charlstm_ln_recurrence_{_cpu_tag()}"


def built_before() -> bool:
    """Whether this machine's build is already in torch's extension cache (loading it is quick)."""
    if _kernel is not None:
        return True
    from torch.utils.cpp_extension import _get_build_directory

    try:
        return any(Path(_get_build_directory(_name(), verbose=False)).glob("*.so"))
    except (OSError, RuntimeError):
        return False


def load():
    """The built extension, building it on the first call; None where it cannot be built
    (``status()`` says why). Safe to call from several threads and processes (torch's builder
    locks its directory)."""
    global _kernel, _status
    with _lock:
        if _status is None:
            if not compiler_available():
                _status = KernelStatus(False, "no C++ compiler, ninja and Python headers here to build its C++ recurrence")
            else:
                from torch.utils.cpp_extension import load as build

                try:
                    _kernel = build(
                        name=_name(),
                        sources=[str(SOURCE)],
                        extra_cflags=FLAGS,
                        extra_ldflags=LINK,
                        verbose=False,
                    )
                    _status = KernelStatus(True)
                except (RuntimeError, OSError, ImportError) as e:
                    last = (str(e).strip().splitlines() or ["unknown error"])[-1]
                    _status = KernelStatus(False, f"its C++ recurrence did not build ({last})")
        return _kernel


def status() -> KernelStatus:
    """Whether the C++ recurrence is built (building it if it has not been tried)."""
    load()
    return _status


_python_only = threading.local()


@contextmanager
def in_python():
    """Within the block, this thread's windows run the Python recurrence: floats that do not
    depend on whether this machine could build the C++ one (``charlstm compress``)."""
    before = getattr(_python_only, "on", False)
    _python_only.on = True
    try:
        yield
    finally:
        _python_only.on = before


def usable(x: torch.Tensor) -> bool:
    """Whether a window of ``x`` runs in C++: on the CPU, in float32 or bfloat16 (a float64 model
    keeps its precision in Python), with a built kernel, outside ``in_python``."""
    return (
        not getattr(_python_only, "on", False)
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and load() is not None
    )


class CppLNRecurrence(torch.autograd.Function):
    """One layer's recurrence: u (T, B, 4H) is W_ih x (+ its bias) before its LN (the kernel
    normalises it); w_hh (4H, H); g_x and g_r the two LNs' gains, bias their biases summed; g_c,
    b_c the cell state's LN; h0, c0 (B, H). Returns out (T, B, H), h_T, c_T. The products run in
    u's type: bfloat16 under bf16 autocast, as the fused layer's do; the rest in float32."""

    @staticmethod
    def forward(ctx, u, w_hh, g_x, g_r, bias, g_c, b_c, h0, c0):
        with torch.autocast("cpu", enabled=False):
            dt = u.dtype if u.dtype == torch.bfloat16 else torch.float32
            u = u.detach().to(dt).contiguous()
            g_x, g_r, bias, g_c, b_c, h0, c0 = (
                t.detach().float().contiguous() for t in (g_x, g_r, bias, g_c, b_c, h0, c0)
            )
            w_dt = w_hh.detach().to(dt)  # (4H, H) in the products' type: the backward's too
            w = torch.ops.mkldnn._reorder_linear_weight(w_dt, u.shape[1])  # packed
            with _calls:
                hs, hp, cs, nx, rx, ns, rs, acts, ms, scs, ks = _kernel.forward(u, w, g_x, g_r, bias, g_c, b_c, h0, c0)
        ctx.save_for_backward(w_dt, g_x, g_r, g_c, hp, cs, nx, rx, ns, rs, acts, ms, scs, ks)
        return hs[1:], hs[-1].clone(), cs[-1].clone()

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):
        w_dt, g_x, g_r, g_c, hp, cs, nx, rx, ns, rs, acts, ms, scs, ks = ctx.saved_tensors
        T, B, H = d_out.shape
        with torch.autocast("cpu", enabled=False):
            d_out = d_out.float().contiguous()
            d_hT = d_hT.float().contiguous() if d_hT is not None else d_out.new_zeros(B, H)
            d_cT = d_cT.float().contiguous() if d_cT is not None else d_out.new_zeros(B, H)
            w_t = torch.ops.mkldnn._reorder_linear_weight(w_dt.t().contiguous(), B)  # (H, 4H), packed
            with _calls:
                dus, drs, d_gx, d_gr, d_bias, d_gc, d_bc = _kernel.backward(
                    d_out, d_hT, d_cT, w_t, g_x, g_r, g_c, cs, nx, rx, ns, rs, acts, ms, scs, ks
                )
            d_w = torch.mm(drs.view(T * B, 4 * H).t(), hp[:-1].reshape(T * B, H)).float()  # (4H, H)
        return dus, d_w, d_gx, d_gr, d_bias, d_gc, d_bc, None, None
