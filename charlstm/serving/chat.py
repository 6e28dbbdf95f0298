"""``POST /v1/chat/completions``: OpenAI's chat API over the completions machinery.

The messages become one transcript by the server's chat template (``generation.template``:
the plain one unless ``charlstm serve --chat-template FILE``), which is generated from as a
completions prompt is, its choices rows of the one engine; each reply ends at the template's
next-turn marker (a stop string, never written) or its length. Every other field is checked as
the completions endpoint checks it, under the same name (``max_completion_tokens`` and
``max_tokens`` are the budget; ``logprobs: true`` with ``top_logprobs: k`` the records), so a
sampling option the completions endpoint learns, this one has too.
"""

from __future__ import annotations

import dataclasses
import json

from charlstm.errors import CharlstmError, ConfigError
from charlstm.serving.batcher import Choice, Finished, Token
from charlstm.serving.errors import ApiError, bad_field
from charlstm.serving.models import ServedModel
from charlstm.serving.replies import _GENERATION_FAILED, CompletionReply
from charlstm.serving.requests import MAX_LOGPROBS, CompletionRequest, Limits, _bool, _int, parse_completion

# Fields of the chat request that the completions request has not, or has in another shape;
# the completions endpoint's own (prompt, echo, suffix, ...) are not chat fields.
CHAT_FIELDS = {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
COMPLETION_ONLY = {"prompt", "echo", "suffix", "best_of", "activation"}


def parse_chat(body, limits: Limits, template) -> tuple[CompletionRequest, list[dict]]:
    """The checked request (as a completions request of one prompt, its stop strings ending
    with the template's markers) and its messages; 400 naming the first bad field."""
    from charlstm.generation.template import transcript_messages

    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", code="invalid_json")
    refused = sorted(set(body) & COMPLETION_ONLY)
    if refused:
        raise bad_field(refused[0], "unknown field (a completions field: use /v1/completions)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", "must be a non-empty list of {\"role\", \"content\"} objects")
    try:
        messages = transcript_messages(messages)
    except ConfigError as e:
        raise bad_field("messages", str(e)) from None

    logprobs = _bool(body, "logprobs")
    top = _int(body, "top_logprobs", None, 0, MAX_LOGPROBS)
    if top is not None and not logprobs:
        raise bad_field("top_logprobs", "needs logprobs: true")
    budget = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    plain = {key: value for key, value in body.items() if key not in CHAT_FIELDS}
    plain["max_tokens"] = _int(body, budget, limits.max_tokens, 0, limits.max_tokens)
    plain["logprobs"] = (top or 0) if logprobs else None
    try:
        wanted = parse_completion(plain, limits)
    except ApiError as e:
        renamed = {"logprobs": "top_logprobs", "max_tokens": budget}.get(e.param)
        if renamed is None:
            raise
        raise bad_field(renamed, e.message.partition(": ")[2]) from None
    sampling = dataclasses.replace(wanted.sampling, stop=wanted.sampling.stop + template.stops)
    return dataclasses.replace(wanted, sampling=sampling), messages


def render(template, messages: list[dict], limits: Limits) -> str:
    """The transcript the model continues: the messages, then the start of the assistant's turn."""
    try:
        transcript = template.render(messages)
    except ConfigError as e:
        raise bad_field("messages", str(e)) from None
    if len(transcript) > limits.max_prompt_chars:
        raise bad_field("messages", f"make a transcript of {len(transcript):,} characters; the limit is {limits.max_prompt_chars:,}")
    return transcript


def encode(model: ServedModel, transcript: str) -> list[int]:
    from charlstm.generation.text import encode_prime

    try:
        return encode_prime(model.tokenizer, transcript, "the transcript")
    except CharlstmError as e:
        raise bad_field("messages", str(e)) from None


def _record(token: str, logprob: float, top: dict[str, float] | None) -> dict:
    """One token of a choice's ``logprobs.content``, in OpenAI's chat shape."""
    entry = {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}
    entry["top_logprobs"] = [
        {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in (top or {}).items()
    ]
    return entry


class ChatReply(CompletionReply):
    """One chat request's answer: ``chat.completion``, or ``chat.completion.chunk`` events."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.id = "chatcmpl-" + self.id.removeprefix("cmpl-")

    def _chat_head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "system_fingerprint": None, "seed": self.seed}

    async def whole(self, events, choices: list[Choice]) -> dict:
        completion = await super().whole(events, choices)
        if not completion:
            return {}
        out = []
        for choice in completion["choices"]:
            logprobs = choice["logprobs"]
            if logprobs is not None:
                tops = logprobs["top_logprobs"] or [None] * len(logprobs["tokens"])
                logprobs = {"content": [_record(*entry) for entry in zip(logprobs["tokens"], logprobs["token_logprobs"], tops)]}
            message = {"role": "assistant", "content": choice["text"]}
            out.append({"index": choice["index"], "message": message, "logprobs": logprobs, "finish_reason": choice["finish_reason"]})
        return {**self._chat_head("chat.completion"), "choices": out, "usage": completion["usage"]}

    def _chunk(self, head: dict, index: int, delta: dict, reason: str | None = None, logprobs=None) -> str:
        body = {**head, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}
        if self.wanted.include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    async def stream(self, events, choices: list[Choice]):
        head = self._chat_head("chat.completion.chunk")
        left = len(choices)
        try:
            yield "".join(self._chunk(head, i, {"role": "assistant", "content": ""}) for i in range(len(choices)))
            while left:
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                out: list[str] = []
                for event in batch:
                    if isinstance(event, Finished):
                        left -= 1
                        self._finished(event)
                        if event.reason == "error":
                            out.append(f"data: {json.dumps(_GENERATION_FAILED.body())}\n\n")
                            continue
                        if event.text:
                            out.append(self._chunk(head, event.index, {"content": event.text}))
                        out.append(self._chunk(head, event.index, {}, event.reason))
                    elif isinstance(event, Token):
                        logprobs = None
                        if self.wanted.sampling.logprobs is not None:
                            logprobs = {"content": [_record(event.token, event.logprob, event.top)]}
                        if event.text or logprobs is not None:
                            out.append(self._chunk(head, event.index, {"content": event.text}, None, logprobs))
                if out:
                    yield "".join(out)
            if self.wanted.include_usage:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': self._usage()})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for choice in choices:
                choice.cancelled = True
