"""LSTM refinements weighed against the fused layer: ``charlstm train`` with its recurrent layer
(one layer) replaced by a cell written as a loop over time steps, to measure what a refinement
buys per step and what it costs in tokens per second before anyone builds it properly.

    python3 benchmarks/cell_variants.py VARIANT [charlstm train flags...]

VARIANT:
    fused      the model as charlstm builds it (``nn.LSTM``, oneDNN): the reference
    loop       the same LSTM as a loop (the control: what the loop alone changes)
    ln         layer normalisation inside the cell (Ba et al. 2016): LN of the input and of the
               recurrent pre-activations, each with its own gain and bias, and of the cell state
               before its tanh
    ln-gates   ln without the cell state's LN (the gates' pre-activations alone)
    ln-cell    ln with the cell state's LN alone
    ln-hand    the ln cell and weights, its recurrence by hand (``LNRecurrence``: a forward
               that keeps no autograd tape and a backward written out, the weight gradients
               as one product after the loop): what LN costs when the loop is written for speed
    ln-cpp     the ln cell's recurrence, both LNs included, in C++: charlstm's own
               (``charlstm/lnlstm/ln_recurrence.cpp``, ``--cell ln-lstm``, built on first use: a
               C++ compiler and ninja needed): per step one product with the weight reordered once
               per window (oneDNN's linear) and one pass per row for the rest; buffers kept between
               windows (results: "The layer-normalised LSTM in C++")
    mogrifier  the Mogrifier (Melis et al. 2020): before each step x and h gate each other, five
               rounds, x <- 2 sigmoid(Q h) * x and h <- 2 sigmoid(R x) * h in turn

The run is an ordinary training run (its summary on stderr); the last line on stdout gives the
variant, the best validation loss and the training tokens per second. Runs of the loop cells
cannot be loaded by charlstm afterwards (their weights are not an ``nn.LSTM``'s). Set the thread
count with ``OMP_NUM_THREADS``; compare variants at equal steps (``--max-steps``) for what a
step buys, and at equal time (steps in the ratio of their tokens per second) for what the budget
buys. Results: benchmarks/RESULTS.md, "Three refinements of the cell, weighed".
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("fused", "loop", "ln", "ln-gates", "ln-cell", "ln-hand", "ln-cpp", "mogrifier")
MOGRIFIER_ROUNDS = 5
LN_EPS = 1e-5


class LoopLSTM(nn.Module):
    """One LSTM layer as a loop over time steps, with the refinement ``variant``: (T, B, E) in,
    (T, B, H) and the last (h, c) out, as ``nn.LSTM`` (gate order i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int, variant: str) -> None:
        super().__init__()
        self.variant, self.hidden_size, self.dropout = variant, hidden_size, 0.0
        self.w_ih = nn.Linear(input_size, 4 * hidden_size)
        self.w_hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        bound = hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        with torch.no_grad():
            self.w_ih.bias[hidden_size : 2 * hidden_size] = 1.0  # the forget gate starts open
        if variant in ("ln", "ln-gates", "ln-hand", "ln-cpp"):
            self.ln_input, self.ln_recurrent = nn.LayerNorm(4 * hidden_size), nn.LayerNorm(4 * hidden_size)
        if variant in ("ln", "ln-cell", "ln-hand", "ln-cpp"):
            self.ln_cell = nn.LayerNorm(hidden_size)
        if variant == "mogrifier":
            e = input_size**-0.5
            self.q = nn.ParameterList(
                nn.Parameter(torch.empty(input_size, hidden_size).uniform_(-bound, bound))
                for _ in range(0, MOGRIFIER_ROUNDS, 2)
            )
            self.r = nn.ParameterList(
                nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-e, e)) for _ in range(1, MOGRIFIER_ROUNDS, 2)
            )

    def forward(self, x: torch.Tensor, hidden=None):
        steps, batch, _ = x.shape
        if hidden is None:
            h = x.new_zeros(batch, self.hidden_size)
            c = x.new_zeros(batch, self.hidden_size)
        else:
            h, c = hidden[0][0], hidden[1][0]
        inputs = None if self.variant == "mogrifier" else self.w_ih(x)  # (T, B, 4H), all steps at once
        if self.variant == "ln-hand":
            pre = self.ln_input(inputs) + self.ln_recurrent.bias
            out, h, c = LNRecurrence.apply(
                pre, self.w_hh.weight, self.ln_recurrent.weight, self.ln_cell.weight, self.ln_cell.bias, h, c
            )
            return out, (h[None], c[None])
        if self.variant == "ln-cpp":
            out, h, c = CppLNRecurrence().apply(
                inputs, self.w_hh.weight, self.ln_input.weight, self.ln_recurrent.weight,
                self.ln_input.bias + self.ln_recurrent.bias, self.ln_cell.weight, self.ln_cell.bias, h, c,
            )
            return out, (h[None], c[None])
        outputs = []
        for t in range(steps):
            if self.variant == "mogrifier":
                x_t = x[t]
                for k in range(MOGRIFIER_ROUNDS):
                    if k % 2 == 0:
                        x_t = 2 * torch.sigmoid(h @ self.q[k // 2].T) * x_t
                    else:
                        h = 2 * torch.sigmoid(x_t @ self.r[k // 2].T) * h
                gates = self.w_ih(x_t) + self.w_hh(h)
            elif self.variant in ("ln", "ln-gates"):
                gates = self.ln_input(inputs[t]) + self.ln_recurrent(self.w_hh(h))
            else:
                gates = inputs[t] + self.w_hh(h)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(self.ln_cell(c) if self.variant in ("ln", "ln-cell") else c)
            outputs.append(h)
        return torch.stack(outputs), (h[None], c[None])


class LNRecurrence(torch.autograd.Function):
    """pre (T, B, 4H): the input side, already normalised (LN(W_ih x)) plus the recurrent LN's bias;
    w_hh (4H, H); g_r (4H,): the recurrent LN's gain; g_c, b_c (H,): the cell LN's; h0, c0 (B, H).
    Returns out (T, B, H), h_T, c_T."""

    @staticmethod
    def forward(ctx, pre, w_hh, g_r, g_c, b_c, h0, c0):
        T, B, G = pre.shape
        H = G // 4
        dt = torch.bfloat16 if torch.is_autocast_enabled("cpu") else torch.float32  # the products' type
        with torch.autocast("cpu", enabled=False):  # the rest in float32, as autocast leaves it
            pre = pre.float()
            w_t = w_hh.t().to(dt)  # (H, 4H)
            h, c = h0.float(), c0.float()
            # What the backward reads: each step's h_{t-1} and c_{t-1} (and the last), the recurrent
            # product normalised and its 1/std, the gates, the cell state normalised, its 1/std, tanh.
            hs, cs = pre.new_empty(T + 1, B, H), pre.new_empty(T + 1, B, H)
            hs[0], cs[0] = h, c
            ns, rs, acts = pre.new_empty(T, B, G), pre.new_empty(T, B, 1), pre.new_empty(T, B, G)
            ms, scs, ks = pre.new_empty(T, B, H), pre.new_empty(T, B, 1), pre.new_empty(T, B, H)
            for t in range(T):
                rec = torch.mm(h.to(dt), w_t).float()
                n, _, rstd = torch.native_layer_norm(rec, (G,), None, None, LN_EPS)
                z = torch.addcmul(pre[t], n, g_r)
                a = acts[t]
                torch.sigmoid(z, out=a)
                a[:, 2 * H : 3 * H].copy_(torch.tanh(z[:, 2 * H : 3 * H]))
                i, f, g, o = a.chunk(4, 1)
                c = torch.addcmul(f * c, i, g)
                m, _, sc = torch.native_layer_norm(c, (H,), None, None, LN_EPS)
                k = torch.tanh(torch.addcmul(b_c, m, g_c))
                h = o * k
                hs[t + 1], cs[t + 1], ns[t], rs[t], ms[t], scs[t], ks[t] = h, c, n, rstd, m, sc, k
        ctx.dt = dt
        ctx.save_for_backward(w_hh, g_r, g_c, hs, cs, ns, rs, acts, ms, scs, ks)
        return hs[1:].clone(), h, c

    @staticmethod
    def backward(ctx, d_out, d_hT, d_cT):
        w_hh, g_r, g_c, hs, cs, ns, rs, acts, ms, scs, ks = ctx.saved_tensors
        T, B, H = d_out.shape
        G = 4 * H
        with torch.autocast("cpu", enabled=False):
            dt = ctx.dt
            w = w_hh.to(dt)  # (4H, H)
            d_out = d_out.float()
            dh = d_hT.float() if d_hT is not None else d_out.new_zeros(B, H)
            dc_next = d_cT.float() if d_cT is not None else d_out.new_zeros(B, H)
            dzs = d_out.new_empty(T, B, G)  # d pre
            drs = d_out.new_empty(T, B, G)  # d (h W_hh^T)
            dchat = d_out.new_empty(T, B, H)
            for t in range(T - 1, -1, -1):
                a = acts[t]
                i, f, g, o = a.chunk(4, 1)
                k = ks[t]
                dh = dh + d_out[t]
                dz = dzs[t]
                dzi, dzf, dzg, dzo = dz.chunk(4, 1)
                torch.mul(dh, k, out=dzo).mul_(o * (1 - o))
                dck = dh * o * (1 - k * k)  # d chat
                dchat[t] = dck
                dm = dck * g_c
                m, sc = ms[t], scs[t]
                dc = sc * (dm - dm.mean(1, keepdim=True) - m * (dm * m).mean(1, keepdim=True)) + dc_next
                torch.mul(dc, g, out=dzi).mul_(i * (1 - i))
                torch.mul(dc, cs[t], out=dzf).mul_(f * (1 - f))
                torch.mul(dc, i, out=dzg).mul_(1 - g * g)
                dc_next = dc * f
                n, r = ns[t], rs[t]
                dn = dz * g_r
                dr = r * (dn - dn.mean(1, keepdim=True) - n * (dn * n).mean(1, keepdim=True))
                drs[t] = dr
                dh = torch.mm(dr.to(dt), w).float()
            d_w = torch.mm(drs.view(T * B, G).t(), hs[:-1].reshape(T * B, H))  # (4H, H)
            d_gr = (dzs * ns).sum((0, 1))
            d_gc = (dchat * ms).sum((0, 1))
            d_bc = dchat.sum((0, 1))
        return dzs, d_w, d_gr, d_gc, d_bc, None, None


def compiler_available() -> bool:
    """Whether this machine can build charlstm's C++ recurrence: a C++ compiler and ninja."""
    from charlstm.lnlstm.kernel import compiler_available as available

    return available()


def kernel():
    """charlstm's C++ recurrence (``charlstm/lnlstm/ln_recurrence.cpp``), built on first use."""
    from charlstm.lnlstm import kernel as ln_kernel

    if not compiler_available():
        raise SystemExit("cell_variants.py: ln-cpp builds charlstm's ln_recurrence.cpp, which needs a C++ compiler and ninja")
    if ln_kernel.load() is None:
        raise SystemExit(f"cell_variants.py: {ln_kernel.status().reason}")
    return ln_kernel


def CppLNRecurrence():  # noqa: N802 (the autograd Function, from charlstm.lnlstm.kernel)
    return kernel().CppLNRecurrence


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in VARIANTS:
        print(__doc__, file=sys.stderr)
        return 2
    variant, flags = argv[0], argv[1:]
    if variant == "ln-cpp":
        kernel()  # built (or refused) before the run starts
    import charlstm.model
    from charlstm.cli import main as charlstm_main

    if variant != "fused":
        build = charlstm.model.LanguageModel.__init__

        def with_loop(self, config):
            build(self, config)
            if config.cell != "lstm" or config.num_layers != 1:
                raise SystemExit("cell_variants.py: the loop cells are one LSTM layer (--num-layers 1)")
            self.rnn = LoopLSTM(config.embedding_dim, config.hidden_size, variant)

        charlstm.model.LanguageModel.__init__ = with_loop
    if "--out" not in flags:
        raise SystemExit("cell_variants.py: give --out DIR (the run directory, to read its metrics)")
    out = Path(flags[flags.index("--out") + 1])
    sys.argv = ["charlstm", "train", *flags]
    try:
        charlstm_main()
    except SystemExit as e:
        if e.code:
            raise
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    best = min(losses) if losses else math.nan
    print(f"{variant}: best validation {best:.4f} nats/token, {speeds[-1] if speeds else math.nan:,.0f} tokens/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
