// charlstm's language model, one token at a time, in plain JavaScript (no framework, no wasm).
//
// The same equations as charlstm.cells.TokenStepper (PyTorch's nn.LSTM / nn.GRU / nn.RNN):
//
//   LSTM  i, f, g, o = W_ih x + b_ih + W_hh h + b_hh        (gates stacked in that order)
//         c = sigmoid(f) * c + sigmoid(i) * tanh(g);  h = sigmoid(o) * tanh(c)
//   GRU   r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
//         n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h = (1 - z) * n + z * h
//   RNN   h = tanh(W_ih x + b_ih + W_hh h + b_hh)
//   LN-LSTM  i, f, g, o = LN(W_ih x + b_ih) * g_ih + b_ln_ih + LN(W_hh h) * g_hh + b_ln_hh
//         c as the LSTM's;  h = sigmoid(o) * tanh(LN(c) * g_c + b_c)   (LN: a row's mean and variance)
//   logits = W_head h + b_head
//
// Weights are kept as Float32Array (decoded from f32, f16, or int8 with one scale per row); the
// arithmetic and the state are float64. The first layer's input part is looked up, not
// multiplied: W_ih embedding[v] + b for every token v is computed once, at load.
//
// Used by the exported page (charlstm export --format html) and by the tests, under Node.
(function (root) {
  "use strict";

  function base64Bytes(text) {
    if (typeof Buffer !== "undefined") {
      const b = Buffer.from(text, "base64");
      return new Uint8Array(b); // a copy, aligned for the typed-array views below
    }
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  }

  let halfTable = null;
  function halfToFloat(bits) {
    // IEEE 754 binary16 -> number, for all 65536 values once.
    if (halfTable === null) {
      halfTable = new Float32Array(65536);
      for (let u = 0; u < 65536; u++) {
        const sign = u & 0x8000 ? -1 : 1;
        const exp = (u >> 10) & 0x1f;
        const frac = u & 0x3ff;
        let v;
        if (exp === 0) v = frac * Math.pow(2, -24);
        else if (exp === 31) v = frac ? NaN : Infinity;
        else v = (1 + frac / 1024) * Math.pow(2, exp - 15);
        halfTable[u] = sign * v;
      }
    }
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = halfTable[bits[i]];
    return out;
  }

  // One stored tensor -> Float32Array (row-major), dequantized as the Python exporter does:
  // int8: w[r, k] = q[r, k] * scale[r], rounded to float32.
  function decodeTensor(t) {
    const bytes = base64Bytes(t.data);
    const size = t.shape.reduce((a, b) => a * b, 1);
    let out;
    if (t.dtype === "f32") out = new Float32Array(bytes.buffer, 0, size);
    else if (t.dtype === "f16") out = halfToFloat(new Uint16Array(bytes.buffer, 0, size));
    else if (t.dtype === "int8") {
      const q = new Int8Array(bytes.buffer, 0, size);
      const scale = new Float32Array(base64Bytes(t.scale).buffer);
      const cols = t.shape.length > 1 ? t.shape[1] : 1;
      out = new Float32Array(size);
      for (let i = 0; i < size; i++) out[i] = q[i] * scale[(i / cols) | 0];
    } else throw new Error("unknown tensor dtype " + t.dtype);
    if (out.length !== size) throw new Error("tensor data does not match its shape");
    return out;
  }

  function sigmoid(x) {
    return 1 / (1 + Math.exp(-x));
  }

  // out[j] = (v[j] - mean) / sqrt(var + 1e-5) * gain[j] + (bias ? bias[j] : 0) + (add ? add[j] : 0)
  function layerNorm(v, n, gain, bias, add, out) {
    let mean = 0, sq = 0;
    for (let j = 0; j < n; j++) mean += v[j];
    mean /= n;
    for (let j = 0; j < n; j++) sq += (v[j] - mean) * (v[j] - mean);
    const r = 1 / Math.sqrt(sq / n + 1e-5);
    for (let j = 0; j < n; j++) out[j] = (v[j] - mean) * r * gain[j] + (bias ? bias[j] : 0) + (add ? add[j] : 0);
  }

  // acc[j] += W[j, :] . v for j < rows; W row-major (rows, cols). Four partial sums per row.
  function matvecAdd(W, rows, cols, v, acc) {
    const tail = cols - (cols % 4);
    for (let j = 0, off = 0; j < rows; j++, off += cols) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let k = 0;
      for (; k < tail; k += 4) {
        s0 += W[off + k] * v[k];
        s1 += W[off + k + 1] * v[k + 1];
        s2 += W[off + k + 2] * v[k + 2];
        s3 += W[off + k + 3] * v[k + 3];
      }
      for (; k < cols; k++) s0 += W[off + k] * v[k];
      acc[j] += s0 + s1 + s2 + s3;
    }
  }

  function Model(record) {
    const c = record.config;
    const T = {};
    for (const name in record.tensors) T[name] = decodeTensor(record.tensors[name]);
    this.cell = c.cell;
    this.H = c.hidden_size;
    this.E = c.embedding_dim;
    this.V = c.vocab_size;
    this.L = c.num_layers;
    this.G = { lstm: 4, "ln-lstm": 4, gru: 3, rnn: 1 }[c.cell];
    const ln = c.cell === "ln-lstm";
    if (!this.G) throw new Error("unknown cell " + c.cell);
    const H = this.H, G = this.G, GH = G * H, V = this.V, E = this.E;
    this.layers = [];
    for (let l = 0; l < this.L; l++) {
      // float64 copies of the matrices multiplied every step: ~10% faster in V8 than reading
      // float32, and the same values.
      this.layers.push({
        w_ih: l === 0 ? T["rnn.weight_ih_l" + l] : new Float64Array(T["rnn.weight_ih_l" + l]),
        w_hh: new Float64Array(T["rnn.weight_hh_l" + l]),
        b_ih: T["rnn.bias_ih_l" + l],
        b_hh: ln ? null : T["rnn.bias_hh_l" + l],
        inputs: l === 0 ? E : H,
      });
      if (ln) {
        const layer = this.layers[l];
        for (const name of ["gain_ih", "gain_hh", "gain_c", "bias_c"]) layer[name] = T["rnn." + name + "_l" + l];
        const b = new Float64Array(GH); // the two LNs' biases, summed
        for (let j = 0; j < GH; j++) b[j] = T["rnn.bias_ln_ih_l" + l][j] + T["rnn.bias_ln_hh_l" + l][j];
        layer.b_ln = b;
      }
    }
    // The first layer's input part for every token: W_ih embedding[v] + b_ih (+ b_hh, except
    // for the GRU, whose candidate needs the recurrent bias apart).
    const first = this.layers[0];
    const emb = T["embedding.weight"];
    this.inputTable = new Float64Array(V * GH);
    const x = new Float64Array(E);
    const row = new Float64Array(GH);
    for (let v = 0; v < V; v++) {
      for (let k = 0; k < E; k++) x[k] = emb[v * E + k];
      for (let j = 0; j < GH; j++) row[j] = first.b_ih[j] + (this.cell === "gru" || ln ? 0 : first.b_hh[j]);
      matvecAdd(first.w_ih, GH, E, x, row);
      if (ln) layerNorm(row, GH, first.gain_ih, first.b_ln, null, row);
      this.inputTable.set(row, v * GH);
    }
    this.headWeight = new Float64Array(c.tie_weights ? emb : T["head.weight"]);
    this.headBias = T["head.bias"];
    this.gates = new Float64Array(GH);
    this.hiddenGates = new Float64Array(GH);
    this.cellNorm = new Float64Array(H);
    this.logits = new Float64Array(V);
  }

  Model.prototype.initState = function () {
    const state = { h: [], c: [] };
    for (let l = 0; l < this.L; l++) {
      state.h.push(new Float64Array(this.H));
      state.c.push(new Float64Array(this.H));
    }
    return state;
  };

  // Feed token `id`; update `state` in place; return the logits of the next token (a Float64Array
  // owned by the model: copy it to keep it past the next step).
  Model.prototype.step = function (id, state) {
    const H = this.H, GH = this.G * H;
    const gates = this.gates;
    let x = null;
    for (let l = 0; l < this.L; l++) {
      const layer = this.layers[l];
      const h = state.h[l];
      if (l === 0) gates.set(this.inputTable.subarray(id * GH, (id + 1) * GH));
      else if (this.cell === "ln-lstm") {
        gates.set(layer.b_ih);
        matvecAdd(layer.w_ih, GH, H, x, gates);
        layerNorm(gates, GH, layer.gain_ih, layer.b_ln, null, gates);
      } else {
        for (let j = 0; j < GH; j++) gates[j] = layer.b_ih[j] + (this.cell === "gru" ? 0 : layer.b_hh[j]);
        matvecAdd(layer.w_ih, GH, H, x, gates);
      }
      if (this.cell === "lstm") {
        matvecAdd(layer.w_hh, GH, H, h, gates);
        const c = state.c[l];
        for (let k = 0; k < H; k++) {
          c[k] = sigmoid(gates[H + k]) * c[k] + sigmoid(gates[k]) * Math.tanh(gates[2 * H + k]);
          h[k] = sigmoid(gates[3 * H + k]) * Math.tanh(c[k]);
        }
      } else if (this.cell === "ln-lstm") {
        const hg = this.hiddenGates;
        hg.fill(0);
        matvecAdd(layer.w_hh, GH, H, h, hg);
        layerNorm(hg, GH, layer.gain_hh, null, gates, gates);
        const c = state.c[l], m = this.cellNorm;
        for (let k = 0; k < H; k++) c[k] = sigmoid(gates[H + k]) * c[k] + sigmoid(gates[k]) * Math.tanh(gates[2 * H + k]);
        layerNorm(c, H, layer.gain_c, layer.bias_c, null, m);
        for (let k = 0; k < H; k++) h[k] = sigmoid(gates[3 * H + k]) * Math.tanh(m[k]);
      } else if (this.cell === "gru") {
        const hg = this.hiddenGates;
        hg.set(layer.b_hh);
        matvecAdd(layer.w_hh, GH, H, h, hg);
        for (let k = 0; k < H; k++) {
          const r = sigmoid(gates[k] + hg[k]);
          const z = sigmoid(gates[H + k] + hg[H + k]);
          const n = Math.tanh(gates[2 * H + k] + r * hg[2 * H + k]);
          h[k] = (1 - z) * n + z * h[k];
        }
      } else {
        matvecAdd(layer.w_hh, GH, H, h, gates);
        for (let k = 0; k < H; k++) h[k] = Math.tanh(gates[k]);
      }
      x = h;
    }
    const logits = this.logits;
    logits.set(this.headBias);
    matvecAdd(this.headWeight, this.V, H, x, logits);
    return logits;
  };

  // Tokenizers: "char" (a vocabulary of code points, the last id for anything else) and "byte"
  // (UTF-8 bytes). Each decoder turns ids into text as they come (bytes may need several ids).
  function Tokenizer(record) {
    this.kind = record.kind;
    if (record.kind === "char") {
      this.codepoints = record.codepoints;
      this.unkId = record.codepoints.length;
      this.index = new Map();
      record.codepoints.forEach((cp, i) => this.index.set(cp, i));
      this.vocabSize = this.unkId + 1;
      this.startId = this.index.has(10) ? this.index.get(10) : 0; // after a newline
    } else if (record.kind === "byte") {
      this.vocabSize = 256;
      this.startId = 10;
    } else {
      throw new Error("this page reads char and byte tokenizers, not " + record.kind);
    }
  }

  Tokenizer.prototype.encode = function (text) {
    if (this.kind === "byte") return Array.from(new TextEncoder().encode(text));
    const ids = [];
    for (const ch of text) {
      const id = this.index.get(ch.codePointAt(0));
      ids.push(id === undefined ? this.unkId : id);
    }
    return ids;
  };

  Tokenizer.prototype.decoder = function () {
    if (this.kind === "byte") {
      const utf8 = new TextDecoder("utf-8");
      const one = new Uint8Array(1);
      return (id) => {
        one[0] = id;
        return utf8.decode(one, { stream: true });
      };
    }
    const cps = this.codepoints;
    return (id) => (id < cps.length ? String.fromCodePoint(cps[id]) : "\ufffd");
  };

  // A small seeded generator (mulberry32): the same seed gives the same text in every browser.
  function rng(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  // The next token from `logits`: greedy at temperature 0; else softmax(logits / temperature)
  // over the top_k most likely tokens (0: all), cut to the smallest set whose probability
  // reaches top_p (1: all).
  function sample(logits, options, random) {
    const temperature = options.temperature;
    if (!(temperature > 0)) return argmax(logits);
    const V = logits.length;
    let order = Array.from({ length: V }, (_, i) => i).sort((a, b) => logits[b] - logits[a]);
    const k = options.topK > 0 ? Math.min(options.topK, V) : V;
    order = order.slice(0, k);
    const top = logits[order[0]];
    const probs = order.map((i) => Math.exp((logits[i] - top) / temperature));
    const total = probs.reduce((a, b) => a + b, 0);
    let keep = probs.length;
    const topP = options.topP > 0 && options.topP < 1 ? options.topP : 1;
    if (topP < 1) {
      let sum = 0;
      for (let i = 0; i < probs.length; i++) {
        sum += probs[i] / total;
        if (sum >= topP) {
          keep = i + 1;
          break;
        }
      }
    }
    let kept = 0;
    for (let i = 0; i < keep; i++) kept += probs[i];
    let u = random() * kept;
    for (let i = 0; i < keep; i++) {
      u -= probs[i];
      if (u <= 0) return order[i];
    }
    return order[keep - 1];
  }

  // Text after `prime`, piece by piece: a generator of strings (one per token; a byte model's
  // multi-byte characters come whole, after their last byte).
  function* generate(model, tokenizer, options) {
    const random = rng(options.seed === undefined ? 1 : options.seed);
    const state = model.initState();
    let ids = tokenizer.encode(options.prime || "");
    if (ids.length === 0) ids = [tokenizer.startId];
    let logits = null;
    for (const id of ids) logits = model.step(id, state);
    const decode = tokenizer.decoder();
    for (let i = 0; i < options.length; i++) {
      const id = sample(logits, options, random);
      yield decode(id);
      if (i + 1 < options.length) logits = model.step(id, state);
    }
  }

  const api = { Model, Tokenizer, decodeTensor, sample, generate, rng, argmax };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.CharLSTM = api;
})(typeof self !== "undefined" ? self : this);
