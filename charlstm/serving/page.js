// The playground: streams /v1/completions (server-sent events over fetch) into the page.
// Each generated token is a <span>; "Colour by" shades it by the probability the model gave it
// or by the value of one cell after reading it (what `charlstm inspect` shows, while it writes).
"use strict";

const $ = (id) => document.getElementById(id);
let running = null; // the AbortController of the generation in progress

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) { $("status").textContent = body.error ? body.error.message : r.statusText; return; }
    $("model").innerHTML = "";
    for (const m of body.data) {
      const o = document.createElement("option");
      o.value = m.id;
      o.textContent = `${m.id} (${m.architecture || ""}, ${m.tokenizer || ""})`;
      $("model").appendChild(o);
    }
  } catch (e) { $("status").textContent = "cannot reach the server"; }
}

function colourOf(mode, token) {
  if (mode === "probability" && token.logprob !== undefined) {
    const p = Math.exp(token.logprob); // 0 red .. 1 green
    return `hsl(${Math.round(120 * p)}, 75%, 80%)`;
  }
  if (mode === "cell" && token.activation !== undefined) {
    const a = Math.max(-1, Math.min(1, token.activation)); // blue negative, red positive
    return a >= 0 ? `rgba(220, 50, 47, ${a})` : `rgba(38, 139, 210, ${-a})`;
  }
  return "";
}

function append(text, token, mode) {
  if (!text) return;
  const span = document.createElement("span");
  span.textContent = text;
  const colour = colourOf(mode, token);
  if (colour) span.style.background = colour;
  if (token.logprob !== undefined) span.title = `p = ${Math.exp(token.logprob).toFixed(3)}`;
  if (token.activation !== undefined) span.title = `cell = ${token.activation.toFixed(3)}`;
  $("output").appendChild(span);
}

async function generate() {
  const mode = $("colour").value;
  const body = {
    model: $("model").value || undefined,
    prompt: $("prompt").value,
    max_tokens: number("length") || 300,
    temperature: number("temperature") ?? 0.8,
    top_k: number("top_k"),
    top_p: number("top_p"),
    min_p: number("min_p"),
    seed: number("seed"),
    stream: true,
  };
  if (mode === "probability") body.logprobs = 0;
  if (mode === "cell") body.activation = { layer: number("layer") || 0, unit: number("unit") || 0 };
  $("legend").textContent = mode === "probability" ? "red: unlikely … green: likely"
    : mode === "cell" ? "blue: negative … red: positive" : "";
  $("output").innerHTML = "";
  const prompt = document.createElement("span");
  prompt.className = "prompt";
  prompt.textContent = body.prompt;
  $("output").appendChild(prompt);

  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "generating…";
  const started = performance.now();
  let chars = 0;
  try {
    const r = await fetch("/v1/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: running.signal,
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error(e.error ? e.error.message : r.statusText);
    }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let finish = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 2);
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        for (const c of chunk.choices) {
          const token = {};
          if (c.logprobs && c.logprobs.token_logprobs) token.logprob = c.logprobs.token_logprobs[0];
          if (c.activations) token.activation = c.activations[0];
          append(c.text, token, mode);
          chars += [...c.text].length;
          if (c.finish_reason) finish = c.finish_reason;
        }
        const seconds = (performance.now() - started) / 1000;
        $("status").textContent = `generating… ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = `done (${finish}): ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`;
  } catch (e) {
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = e.name === "AbortError"
      ? `stopped: ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`
      : `error: ${e.message}`;
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => { if (running) running.abort(); });
$("key").addEventListener("change", loadModels);
loadModels();
