"""A completions request's answer, built from the batcher's events: one JSON body, or
server-sent events in OpenAI's ``text_completion`` chunk shape (many events coalesced per write)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from charlstm.serving.batcher import Choice, Finished, Token
from charlstm.serving.errors import ApiError
from charlstm.serving.requests import CompletionRequest

_GENERATION_FAILED = ApiError(500, "the generation failed (logged on the server)", type="server_error")


class CompletionReply:
    """One completions request's answer, built from the batcher's events."""

    def __init__(self, wanted: CompletionRequest, model: str, seed: int, prompts: list[str], prompt_tokens: int, request):
        self.wanted, self.model, self.seed, self.request = wanted, model, seed, request
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        count = len(prompts) * wanted.n
        self.echo = [prompts[i // wanted.n] if wanted.echo else "" for i in range(count)]
        self.offsets = [len(e) for e in self.echo]
        self.echo_logprobs: list[dict | None] | None = None  # per prompt: its own tokens' records (tokens.echo_records)

    def _echoed(self, index: int) -> dict | None:
        """The prompt's records that choice ``index``'s logprobs begin with (echo with logprobs)."""
        if self.echo_logprobs is None:
            return None
        return self.echo_logprobs[index // self.wanted.n]

    def _first_logprobs(self, index: int) -> dict | None:
        """Choice ``index``'s logprobs before any token is generated: the prompt's with echo."""
        if self.wanted.sampling.logprobs is None:
            return None
        echoed = self._echoed(index) or {}
        return {key: list(echoed.get(key, ())) for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}

    def _head(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model, "seed": self.seed}

    def _usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def _logprobs(self, event: Token) -> dict | None:
        if self.wanted.sampling.logprobs is None:
            return None
        offset = self.offsets[event.index]
        self.offsets[event.index] += len(event.token)
        piece = {"tokens": [event.token], "token_logprobs": [event.logprob], "top_logprobs": None, "text_offset": [offset]}
        if event.top is not None:
            piece["top_logprobs"] = [event.top]
        return piece

    def _finished(self, event: Finished) -> None:
        self.completion_tokens += event.completion_tokens
        self.request.state.tokens = self.completion_tokens

    async def whole(self, events: asyncio.Queue, choices: list[Choice]) -> dict:
        texts = list(self.echo)
        logprobs = [self._first_logprobs(i) for i in range(len(choices))]
        activations = [[] for _ in choices]
        reasons: list[str | None] = [None] * len(choices)
        try:
            while None in reasons:
                event = await self._next(events)
                if event is None:
                    return {}  # the client has gone: nobody reads this
                texts[event.index] += event.text
                if isinstance(event, Finished):
                    reasons[event.index] = event.reason
                    self._finished(event)
                    continue
                piece = self._logprobs(event)
                if piece is not None:
                    for key, value in piece.items():
                        if value is not None:
                            logprobs[event.index][key] += value
                if event.activation is not None:
                    activations[event.index].append(event.activation)
        finally:
            for choice in choices:
                choice.cancelled = True  # a no-op for those that finished
        if "error" in reasons:
            raise _GENERATION_FAILED
        out = []
        for i in range(len(choices)):
            choice = {"index": i, "text": texts[i], "logprobs": logprobs[i], "finish_reason": reasons[i]}
            if self.wanted.sampling.activation is not None:
                choice["activations"] = activations[i]
            out.append(choice)
        return {**self._head(), "choices": out, "usage": self._usage(), "system_fingerprint": None}

    async def _next(self, events: asyncio.Queue):
        """The next event; None once the client has disconnected (checked every half second)."""
        while True:
            try:
                return await asyncio.wait_for(events.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await self.request.is_disconnected():
                    return None

    async def stream(self, events: asyncio.Queue, choices: list[Choice]):
        head = self._head()

        usage = ', "usage": null' if self.wanted.include_usage else ""
        plain = 'data: {%s, "choices": [{"index": %%d, "text": %%s, "logprobs": null, "finish_reason": null}]%s}\n\n' % (
            json.dumps(head)[1:-1].replace("%", "%%"), usage
        )

        def chunk(index: int, text: str, reason: str | None, logprobs=None, activation=None) -> str:
            if reason is None and logprobs is None and activation is None:  # most events: a template
                return plain % (index, json.dumps(text))
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
            if activation is not None:
                choice["activations"] = [activation]
            body = {**head, "choices": [choice]}
            if self.wanted.include_usage:
                body["usage"] = None
            return f"data: {json.dumps(body)}\n\n"

        left = len(choices)
        try:
            for i, text in enumerate(self.echo):
                if text:
                    yield chunk(i, text, None, self._echoed(i))
            while left:
                # Everything the batcher has produced since the last write goes out in one write,
                # and a choice's plain text pieces in one event: with many streams the event loop,
                # not the model, is the limit, and a client that fell behind catches up at once.
                batch = [await events.get()]
                while not events.empty():
                    batch.append(events.get_nowait())
                out: list[str] = []
                pending: dict[int, str] = {}  # index -> text not yet sent

                def flush() -> None:
                    out.extend(chunk(index, text, None) for index, text in pending.items() if text)
                    pending.clear()

                for event in batch:
                    if isinstance(event, Finished):
                        left -= 1
                        self._finished(event)
                        pending[event.index] = pending.get(event.index, "")
                        flush()
                        if event.reason == "error":
                            out.append(f"data: {json.dumps(_GENERATION_FAILED.body())}\n\n")
                        else:
                            out.append(chunk(event.index, event.text, event.reason))
                        continue
                    logprobs = self._logprobs(event)
                    if logprobs is None and event.activation is None:
                        pending[event.index] = pending.get(event.index, "") + event.text
                    else:  # per-token records stay one token an event, as OpenAI sends them
                        flush()
                        out.append(chunk(event.index, event.text, None, logprobs, event.activation))
                flush()
                if out:
                    yield "".join(out)
            if self.wanted.include_usage:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': self._usage()})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            # The client may have gone (Starlette cancels this generator): free the slots.
            for choice in choices:
                choice.cancelled = True
