// The layer-normalised LSTM's recurrence (charlstm.lnlstm, --cell ln-lstm) in C++, forward and
// backward: the input side's LN for the whole window first, then per step one product (oneDNN's
// linear, its weight reordered once per call, as the fused RNN primitive keeps it) and one pass per
// row for everything between two products, in float32, the rows shared among torch's threads.
// Buffers are kept between calls and reused once nothing else holds them (a fresh 8 MB buffer costs
// its page faults: about a quarter of the forward's time); one caller at a time. Built on first use
// by torch.utils.cpp_extension.load (charlstm/lnlstm/kernel.py: a C++ compiler and ninja needed).
// Results: benchmarks/RESULTS.md, "The layer-normalised LSTM in C++".
//
// Forward, per step t and row b (G = 4H, gate order i, f, g, o), u = W_ih x computed before:
//   rec = h_{t-1} W_hh^T;  n = LN(rec);  z = LN(u_t) * g_x + n * g_r + bias;  i, f, o = sigmoid, g = tanh
//   c_t = f c_{t-1} + i g;  m = LN(c_t);  k = tanh(m * g_c + b_c);  h_t = o k
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <cmath>
#include <cstring>
#include <vector>

namespace {

constexpr float kEps = 1e-5f;

inline float sigmoid(float x) { return 0.5f * std::tanh(0.5f * x) + 0.5f; }

// Conversions written so that the loops around them vectorise (c10::BFloat16's do not): float to
// bfloat16 rounds to nearest even, as c10 does for finite values.
inline float to_float(float x) { return x; }
inline float to_float(c10::BFloat16 x) {
  uint32_t u = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename P> inline P from_float(float f);
template <> inline float from_float<float>(float f) { return f; }
template <> inline c10::BFloat16 from_float<c10::BFloat16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return c10::BFloat16(static_cast<uint16_t>(u >> 16), c10::BFloat16::from_bits());
}

// (x - mean) * rstd into out; returns rstd
template <typename X>
inline float normalise(const X* x, float* out, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = to_float(x[j]);
  float sum = 0.f, sq = 0.f;
#pragma omp simd reduction(+ : sum, sq)
  for (int64_t j = 0; j < n; ++j) { sum += out[j]; sq += out[j] * out[j]; }
  const float mean = sum / n;
  const float var = std::max(sq / n - mean * mean, 0.f);
  const float rstd = 1.f / std::sqrt(var + kEps);
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) out[j] = (out[j] - mean) * rstd;
  return rstd;
}

// d of LN's input given d of its normalised output dn, the output n and rstd, into out (+= add)
template <typename O>
inline void normalise_back(const float* dn, const float* n, float rstd, const float* add, O* out, int64_t len) {
  float s1 = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t j = 0; j < len; ++j) { s1 += dn[j]; s2 += dn[j] * n[j]; }
  s1 /= len; s2 /= len;
  if (add) {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) out[j] = from_float<O>(rstd * (dn[j] - s1 - n[j] * s2) + add[j]);
  } else {
#pragma omp simd
    for (int64_t j = 0; j < len; ++j) out[j] = from_float<O>(rstd * (dn[j] - s1 - n[j] * s2));
  }
}

// x (B, K) times a weight reordered by mkldnn::_reorder_linear_weight from (N, K): (B, N) in x's type
at::Tensor packed_linear(const at::Tensor& x, const at::Tensor& packed) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack{x, packed, c10::IValue(), std::string("none"), c10::List<std::optional<at::Scalar>>(),
                          c10::IValue(std::string(""))};
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

// Step t's slice of a contiguous (T, ...) tensor, without making a tensor of it (a select costs a
// microsecond, and a step made a dozen)
template <typename X>
inline X* at_step(const at::Tensor& x, int64_t t) {
  return x.template data_ptr<X>() + t * x.stride(0);
}

// A buffer of this shape and type: the one kept in ``slot`` when nothing else holds its storage.
// The kept tensor itself never leaves this file (callers get aliases, which count on its storage).
at::Tensor buffer(int slot, at::IntArrayRef sizes, at::ScalarType type = at::kFloat) {
  static std::vector<at::Tensor> kept(32);
  auto& t = kept[slot];
  if (!t.defined() || t.sizes() != sizes || t.scalar_type() != type || t.use_count() != 1 ||
      t.storage().use_count() != 1)
    t = at::empty(sizes, at::TensorOptions().dtype(type));
  return t.alias();
}

template <typename P> at::ScalarType type_of();
template <> at::ScalarType type_of<float>() { return at::kFloat; }
template <> at::ScalarType type_of<c10::BFloat16>() { return at::kBFloat16; }

}  // namespace

// The forward with the products in P (float or bfloat16). u (T, B, G) in P: W_ih x; w (G, H) in P,
// reordered for linear; g_x, g_r (G): the input's and the recurrence's LN gains; bias (G): the two LNs'
// biases, summed; g_c, b_c (H): the cell's LN; h0, c0 (B, H) float. Returns hs (T+1, B, H) float and
// hp the same in P (the products' inputs), cs (T+1, B, H), nx, ns (T, B, G): u and rec normalised,
// rx, rs (T, B): their 1/std, acts (T, B, G), ms (T, B, H), scs (T, B), ks (T, B, H).
template <typename P>
std::vector<at::Tensor> forward_(const at::Tensor& u, const at::Tensor& w, const at::Tensor& g_x, const at::Tensor& g_r,
                                 const at::Tensor& bias, const at::Tensor& g_c, const at::Tensor& b_c,
                                 const at::Tensor& h0, const at::Tensor& c0) {
  const int64_t T = u.size(0), B = u.size(1), G = u.size(2), H = G / 4;
  auto hs = buffer(0, {T + 1, B, H}), cs = buffer(1, {T + 1, B, H}), hp = buffer(11, {T + 1, B, H}, type_of<P>());
  auto ns = buffer(2, {T, B, G}), acts = buffer(3, {T, B, G}), nx = buffer(12, {T, B, G});
  auto rs = buffer(4, {T, B}), scs = buffer(5, {T, B}), rx = buffer(13, {T, B});
  auto ms = buffer(6, {T, B, H}), ks = buffer(7, {T, B, H});
  hs[0].copy_(h0);
  hp[0].copy_(h0);
  cs[0].copy_(c0);
  const float *gx = g_x.data_ptr<float>(), *gr = g_r.data_ptr<float>(), *bi = bias.data_ptr<float>();
  const float *gc = g_c.data_ptr<float>(), *bc = b_c.data_ptr<float>();
  {  // the input side for every step at once: it does not wait for the recurrence
    const P* up = u.template data_ptr<P>();
    float *nxp = nx.data_ptr<float>(), *rxp = rx.data_ptr<float>();
    at::parallel_for(0, T * B, 16, [&](int64_t lo, int64_t hi) {
      for (int64_t row = lo; row < hi; ++row) rxp[row] = normalise(up + row * G, nxp + row * G, G);
    });
  }
  for (int64_t t = 0; t < T; ++t) {
    const auto rec = packed_linear(hp[t], w).contiguous();  // (B, G) in P
    const P* r = rec.template data_ptr<P>();
    const float* x = at_step<float>(nx, t);
    float *n = at_step<float>(ns, t), *a = at_step<float>(acts, t);
    float *rr = at_step<float>(rs, t), *sc = at_step<float>(scs, t);
    float *m = at_step<float>(ms, t), *k = at_step<float>(ks, t);
    const float* c_prev = at_step<float>(cs, t);
    float *c = at_step<float>(cs, t + 1), *h = at_step<float>(hs, t + 1);
    P* h_p = at_step<P>(hp, t + 1);
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        float *nb = n + b * G, *ab = a + b * G;
        rr[b] = normalise(r + b * G, nb, G);
        const float* xb = x + b * G;
#pragma omp simd
        for (int64_t j = 0; j < 2 * H; ++j) ab[j] = sigmoid(xb[j] * gx[j] + nb[j] * gr[j] + bi[j]);
#pragma omp simd
        for (int64_t j = 2 * H; j < 3 * H; ++j) ab[j] = std::tanh(xb[j] * gx[j] + nb[j] * gr[j] + bi[j]);
#pragma omp simd
        for (int64_t j = 3 * H; j < G; ++j) ab[j] = sigmoid(xb[j] * gx[j] + nb[j] * gr[j] + bi[j]);
        const float *ib = ab, *fb = ab + H, *gb = ab + 2 * H, *ob = ab + 3 * H;
        const float* cpb = c_prev + b * H;
        float *cb = c + b * H, *mb = m + b * H, *kb = k + b * H, *hb = h + b * H;
        P* hpb = h_p + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) cb[j] = fb[j] * cpb[j] + ib[j] * gb[j];
        sc[b] = normalise(cb, mb, H);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          kb[j] = std::tanh(mb[j] * gc[j] + bc[j]);
          hb[j] = ob[j] * kb[j];
        }
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) hpb[j] = from_float<P>(hb[j]);
      }
    });
  }
  return {hs, hp, cs, nx, rx, ns, rs, acts, ms, scs, ks};
}

std::vector<at::Tensor> forward(at::Tensor u, at::Tensor w, at::Tensor g_x, at::Tensor g_r, at::Tensor bias,
                                at::Tensor g_c, at::Tensor b_c, at::Tensor h0, at::Tensor c0) {
  if (w.scalar_type() == at::kBFloat16) return forward_<c10::BFloat16>(u, w, g_x, g_r, bias, g_c, b_c, h0, c0);
  return forward_<float>(u, w, g_x, g_r, bias, g_c, b_c, h0, c0);
}

// The backward of forward_<P>: d_out (T, B, H), d_hT, d_cT (B, H) float; w_t (H, G) in P, reordered
// for linear. Returns dus (T, B, G) in P: d u; drs (T, B, G) in P: d rec; and d g_x, d g_r, d bias (G),
// d g_c, d b_c (H), each summed over the steps by row (a row is one thread's in a step) and then over rows.
template <typename P>
std::vector<at::Tensor> backward_(const at::Tensor& d_out, const at::Tensor& d_hT, const at::Tensor& d_cT,
                                  const at::Tensor& w_t, const at::Tensor& g_x, const at::Tensor& g_r,
                                  const at::Tensor& g_c, const at::Tensor& cs, const at::Tensor& nx,
                                  const at::Tensor& rx, const at::Tensor& ns, const at::Tensor& rs,
                                  const at::Tensor& acts, const at::Tensor& ms, const at::Tensor& scs,
                                  const at::Tensor& ks) {
  const int64_t T = d_out.size(0), B = d_out.size(1), H = d_out.size(2), G = 4 * H;
  auto dus = buffer(8, {T, B, G}, type_of<P>()), drs = buffer(9, {T, B, G}, type_of<P>());
  auto sums_g = at::zeros({3, B, G}, d_out.options()), sums_h = at::zeros({2, B, H}, d_out.options());
  float *s_gx = sums_g[0].data_ptr<float>(), *s_gr = sums_g[1].data_ptr<float>(), *s_br = sums_g[2].data_ptr<float>();
  float *s_gc = sums_h[0].data_ptr<float>(), *s_bc = sums_h[1].data_ptr<float>();
  auto dh = d_hT.to(type_of<P>()).contiguous();  // (B, H): d h_t from the step after (zero after the window)
  auto dc_next = d_cT.clone().contiguous();
  auto dc = at::empty({B, H}, d_out.options());
  const float *gx = g_x.data_ptr<float>(), *gr = g_r.data_ptr<float>(), *gc = g_c.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const float *dout = at_step<float>(d_out, t), *a = at_step<float>(acts, t), *k = at_step<float>(ks, t);
    const float *m = at_step<float>(ms, t), *sc = at_step<float>(scs, t), *c_prev = at_step<float>(cs, t);
    const float *n = at_step<float>(ns, t), *rr = at_step<float>(rs, t);
    const float *x = at_step<float>(nx, t), *rxt = at_step<float>(rx, t);
    P *du = at_step<P>(dus, t), *dr = at_step<P>(drs, t);
    const P* dhp = dh.template data_ptr<P>();
    float *dcn = dc_next.data_ptr<float>(), *dcp = dc.data_ptr<float>();
    at::parallel_for(0, B, 1, [&](int64_t lo, int64_t hi) {
      std::vector<float> dm(H), dn(G), dzv(G);
      float* dzb = dzv.data();
      for (int64_t b = lo; b < hi; ++b) {
        const float *ab = a + b * G, *kb = k + b * H, *mb = m + b * H, *nb = n + b * G;
        const float *ib = ab, *fb = ab + H, *gb = ab + 2 * H, *ob = ab + 3 * H;
        const float* xb = x + b * G;
        float* dcb = dcp + b * H;
        const P* dhb = dhp + b * H;
        const float* doutb = dout + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float dhj = to_float(dhb[j]) + doutb[j];
          const float o = ob[j], kk = kb[j];
          dzb[3 * H + j] = dhj * kk * o * (1.f - o);
          const float dck = dhj * o * (1.f - kk * kk);
          s_gc[b * H + j] += dck * mb[j];
          s_bc[b * H + j] += dck;
          dm[j] = dck * gc[j];
        }
        normalise_back(dm.data(), mb, sc[b], dcn + b * H, dcb, H);
        const float* cpb = c_prev + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float d = dcb[j], i = ib[j], f = fb[j], g = gb[j];
          dzb[j] = d * g * i * (1.f - i);
          dzb[H + j] = d * cpb[j] * f * (1.f - f);
          dzb[2 * H + j] = d * i * (1.f - g * g);
          dcn[b * H + j] = d * f;
        }
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) {
          dn[j] = dzb[j] * gr[j];
          s_gx[b * G + j] += dzb[j] * xb[j];
          s_gr[b * G + j] += dzb[j] * nb[j];
          s_br[b * G + j] += dzb[j];
        }
        normalise_back(dn.data(), nb, rr[b], static_cast<const float*>(nullptr), dr + b * G, G);
#pragma omp simd
        for (int64_t j = 0; j < G; ++j) dn[j] = dzb[j] * gx[j];
        normalise_back(dn.data(), xb, rxt[b], static_cast<const float*>(nullptr), du + b * G, G);
      }
    });
    dh = packed_linear(drs[t], w_t).contiguous();  // (B, H) in P
  }
  auto g = sums_g.sum(1), h = sums_h.sum(1);
  return {dus, drs, g[0], g[1], g[2], h[0], h[1]};
}

std::vector<at::Tensor> backward(at::Tensor d_out, at::Tensor d_hT, at::Tensor d_cT, at::Tensor w_t, at::Tensor g_x,
                                 at::Tensor g_r, at::Tensor g_c, at::Tensor cs, at::Tensor nx, at::Tensor rx,
                                 at::Tensor ns, at::Tensor rs, at::Tensor acts, at::Tensor ms, at::Tensor scs,
                                 at::Tensor ks) {
  if (w_t.scalar_type() == at::kBFloat16)
    return backward_<c10::BFloat16>(d_out, d_hT, d_cT, w_t, g_x, g_r, g_c, cs, nx, rx, ns, rs, acts, ms, scs, ks);
  return backward_<float>(d_out, d_hT, d_cT, w_t, g_x, g_r, g_c, cs, nx, rx, ns, rs, acts, ms, scs, ks);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LN-LSTM recurrence, forward");
  m.def("backward", &backward, "LN-LSTM recurrence, backward");
}
