// The playground: streams /v1/completions (server-sent events over fetch) into the page.
// Each generated token is a <span>; "Colour by" shades it by the probability the model gave it
// or by the value of one cell after reading it (what `charlstm inspect` shows, while it writes).
// Chat mode keeps a conversation and streams /v1/chat/completions: the server's chat template
// writes the messages out, and each reply is the assistant's turn.
"use strict";

const $ = (id) => document.getElementById(id);
let running = null; // the AbortController of the generation in progress
let messages = []; // chat mode: the conversation so far ({role, content})
const chatting = () => $("mode").value === "chat";

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

function append(text, token, mode, into) {
  if (!text) return;
  const span = document.createElement("span");
  span.textContent = text;
  const colour = colourOf(mode, token);
  if (colour) span.style.background = colour;
  if (token.logprob !== undefined) span.title = `p = ${Math.exp(token.logprob).toFixed(3)}`;
  if (token.activation !== undefined) span.title = `cell = ${token.activation.toFixed(3)}`;
  (into || $("output")).appendChild(span);
}

function turn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role;
  const name = document.createElement("span");
  name.className = "role";
  name.textContent = role;
  div.appendChild(name);
  if (text) div.appendChild(document.createTextNode(text));
  $("output").appendChild(div);
  return div;
}

function showMode() {
  const chat = chatting();
  $("generate").textContent = chat ? "Send" : "Generate";
  $("clear").hidden = !chat;
  $("prompt").placeholder = chat ? "Type a message" : "Type a prompt";
  $("output").innerHTML = "";
  messages = [];
}

// The request for the mode: what to send where, and the text shown before the reply.
function request(body, mode) {
  if (!chatting()) {
    body.prompt = $("prompt").value;
    if (mode === "probability") body.logprobs = 0;
    if (mode === "cell") body.activation = { layer: number("layer") || 0, unit: number("unit") || 0 };
    $("output").innerHTML = "";
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = body.prompt;
    $("output").appendChild(prompt);
    return { url: "/v1/completions", into: $("output") };
  }
  if (!messages.length && $("system").value.trim()) messages.push({ role: "system", content: $("system").value.trim() });
  messages.push({ role: "user", content: $("prompt").value });
  turn("user", $("prompt").value);
  $("prompt").value = "";
  body.messages = messages;
  if (mode === "probability") body.logprobs = true;
  return { url: "/v1/chat/completions", into: turn("assistant", "") };
}

// One streamed choice's piece: {text, token} from a completions or a chat chunk.
function piece(c) {
  const token = {};
  if (c.delta) {
    const entries = c.logprobs && c.logprobs.content;
    if (entries && entries.length) token.logprob = entries[0].logprob;
    return { text: c.delta.content || "", token };
  }
  if (c.logprobs && c.logprobs.token_logprobs) token.logprob = c.logprobs.token_logprobs[0];
  if (c.activations) token.activation = c.activations[0];
  return { text: c.text, token };
}

async function generate() {
  const mode = $("colour").value;
  const body = {
    model: $("model").value || undefined,
    max_tokens: number("length") || 300,
    temperature: number("temperature") ?? 0.8,
    top_k: number("top_k"),
    top_p: number("top_p"),
    min_p: number("min_p"),
    seed: number("seed"),
    regex: $("regex").value || undefined,
    stream: true,
  };
  $("legend").textContent = mode === "probability" ? "red: unlikely … green: likely"
    : mode === "cell" && !chatting() ? "blue: negative … red: positive" : "";
  const { url, into } = request(body, mode);
  let reply = "";
  let failed = false;

  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("status").textContent = "generating…";
  const started = performance.now();
  let chars = 0;
  try {
    const r = await fetch(url, {
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
        if (chunk.error) throw new Error(chunk.error.message);
        for (const c of chunk.choices) {
          const { text, token } = piece(c);
          append(text, token, mode, into);
          reply += text;
          chars += [...text].length;
          if (c.finish_reason) finish = c.finish_reason;
        }
        const seconds = (performance.now() - started) / 1000;
        $("status").textContent = `generating… ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`;
      }
    }
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = `done (${finish}): ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`;
  } catch (e) {
    failed = e.name !== "AbortError";
    const seconds = (performance.now() - started) / 1000;
    $("status").textContent = e.name === "AbortError"
      ? `stopped: ${chars} characters, ${(chars / seconds).toFixed(0)} chars/s`
      : `error: ${e.message}`;
  } finally {
    if (chatting() && failed) messages.pop(); // the message was not answered: send it again
    else if (chatting()) messages.push({ role: "assistant", content: reply });
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => { if (running) running.abort(); });
$("key").addEventListener("change", loadModels);
$("mode").addEventListener("change", showMode);
$("clear").addEventListener("click", showMode);
loadModels();
