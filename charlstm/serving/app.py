"""The Starlette application: routes, the API key, CORS, limits, one log line per request.

    GET  /                  the playground page (page.html, page.js: nothing from the internet)
    POST /v1/completions    OpenAI's completions API; ``stream`` sends server-sent events
    GET  /v1/models         the models served
    POST /v1/chat/completions  OpenAI's chat completions: messages written out by a chat template
    POST /v1/score          per-line log-probability and bits per character (``charlstm score``)
    POST /tokenize          text to token ids, vLLM's shape (and /detokenize, GET /tokenizer_info)
    GET  /health            503 until the models are loaded, then 200
    GET  /metrics           Prometheus' text format
    GET  /openapi.json      the API's schema

Every refusal is OpenAI's error shape; an unexpected failure is a 500 in that shape too, its
traceback logged on the server and never sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from collections.abc import Callable
from contextlib import asynccontextmanager
from importlib import resources

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from charlstm.errors import CharlstmError
from charlstm.serving import chat, tokens
from charlstm.serving.batcher import Batcher, Choice
from charlstm.serving.errors import ApiError, bad_field, server_busy
from charlstm.serving.guard import OPEN_PATHS, ROUTED, _error_response, guard  # noqa: F401 (OPEN_PATHS: the paths without a key)
from charlstm.serving.metrics import Metrics
from charlstm.serving.models import ServedModel, check_names
from charlstm.serving.replies import CompletionReply
from charlstm.serving.requests import Limits, MAX_SEED, parse_completion, parse_score
from charlstm.serving.schema import openapi

log = logging.getLogger("charlstm.serve")

_PAGE_HEADERS = {
    # The page fetches nothing from anywhere but this server.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
    "Cache-Control": "no-cache",
}


def _api(handler):
    """Run ``handler``; an ``ApiError`` becomes its response."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as e:
            return _error_response(e)

    endpoint.__name__ = handler.__name__
    return endpoint


class Server:
    """The application's state; ``Server(...).app`` is the ASGI app.

    ``models``: the served models, or a function that loads them (run on a thread at start-up;
    ``/health`` says 503 until it returns). ``on_load_error(error)`` is told if loading fails."""

    def __init__(
        self,
        models: list[ServedModel] | Callable[[], list[ServedModel]],
        limits: Limits = Limits(),
        api_key: str | None = None,
        cors_origins: list[str] | tuple[str, ...] = (),
        on_load_error: Callable[[BaseException], None] | None = None,
        chat_template=None,
    ):
        self.limits = limits
        self.chat_template = chat_template  # a generation.template.ChatTemplate; None: the plain one
        self.api_key = api_key
        self.metrics = Metrics()
        self.batcher = Batcher(limits, self.metrics)
        self.models: dict[str, ServedModel] = {}
        self.ready = False
        self._loader = models if callable(models) else (lambda: models)
        self._on_load_error = on_load_error
        self._schema = json.dumps(openapi(limits)).encode()
        package = resources.files("charlstm.serving")
        self._page = (package / "page.html").read_bytes()
        self._script = (package / "page.js").read_bytes()
        routes = [
            Route("/", self.page),
            Route("/page.js", self.script),
            Route("/health", self.health),
            Route("/metrics", self.prometheus),
            Route("/openapi.json", self.schema),
            Route("/v1/models", _api(self.list_models)),
            Route("/v1/models/{name:path}", _api(self.get_model)),
            Route("/v1/completions", _api(self.completions), methods=["POST"]),
            Route("/v1/chat/completions", _api(self.chat_completions), methods=["POST"]),
            Route("/v1/score", _api(self.score), methods=["POST"]),
            Route("/tokenize", _api(self.tokenize), methods=["POST"]),
            Route("/detokenize", _api(self.detokenize), methods=["POST"]),
            Route("/tokenizer_info", _api(self.tokenizer_info)),
        ]
        app = Starlette(routes=routes, lifespan=self._lifespan, exception_handlers={HTTPException: self._http_error})
        self.starlette = app
        outer = guard(app, self)
        if cors_origins:
            outer = CORSMiddleware(
                outer, allow_origins=list(cors_origins), allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]
            )
        self.app = outer

    # ------------------------------------------------------------------------------ plumbing

    @asynccontextmanager
    async def _lifespan(self, app):
        self.batcher.start()
        task = asyncio.create_task(self._load())
        try:
            yield
        finally:
            self.batcher.accepting = False
            task.cancel()
            await asyncio.to_thread(self.batcher.stop)

    async def _load(self) -> None:
        try:
            models = await asyncio.to_thread(self._loader)
            check_names(models)
        except (CharlstmError, OSError) as e:
            log.error("error: %s", e)
            if self._on_load_error is not None:
                self._on_load_error(e)
            return
        self.models = {m.name: m for m in models}
        self.ready = True
        log.info("serving %s", ", ".join(f"{m.name} ({m.description.get('architecture', '?')})" for m in models))

    def _too_large(self) -> ApiError:
        return ApiError(413, f"the body is over {self.limits.max_body_bytes:,} bytes", code="body_too_large")

    async def _http_error(self, request: Request, error: HTTPException) -> Response:
        if error.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        return _error_response(ApiError(error.status_code, message, code="not_found" if error.status_code == 404 else None))

    async def _read_json(self, request: Request):
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.limits.max_body_bytes:
                raise self._too_large()
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None

    def _model(self, name: str | None) -> ServedModel:
        if not self.ready:
            raise server_busy("the models are still loading", self.limits.retry_after)
        if name is None:
            if len(self.models) == 1:
                return next(iter(self.models.values()))
            raise bad_field("model", f"is required: this server has {', '.join(self.models)}")
        if name not in self.models:
            raise ApiError(
                404, f"model: no model {name[:100]!r}; this server has {', '.join(self.models)}", param="model", code="model_not_found"
            )
        return self.models[name]

    # -------------------------------------------------------------------------------- routes

    async def page(self, request: Request) -> Response:
        return Response(self._page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def script(self, request: Request) -> Response:
        return Response(self._script, media_type="text/javascript; charset=utf-8", headers=_PAGE_HEADERS)

    async def schema(self, request: Request) -> Response:
        return Response(self._schema, media_type="application/json")

    async def health(self, request: Request) -> Response:
        if not self.ready:
            return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "1"})
        if not self.batcher.accepting:
            return JSONResponse({"status": "stopping"}, status_code=503)
        return JSONResponse({"status": "ok", "models": list(self.models)})

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    def _describe(self, model: ServedModel) -> dict:
        return {"id": model.name, "object": "model", "created": 0, "owned_by": "charlstm", **model.description}

    async def list_models(self, request: Request) -> Response:
        if not self.ready:
            raise server_busy("the models are still loading", self.limits.retry_after)
        return JSONResponse({"object": "list", "data": [self._describe(m) for m in self.models.values()]})

    async def get_model(self, request: Request) -> Response:
        return JSONResponse(self._describe(self._model(request.path_params["name"])))

    async def score(self, request: Request) -> Response:
        from charlstm.evaluation.score import score_lines

        wanted = parse_score(await self._read_json(request), self.limits)
        model = self._model(wanted.model)
        for line in wanted.lines:
            self._encode(model, line, "input")
        results = await self.batcher.call(
            lambda: score_lines(model.scorer, model.tokenizer, list(wanted.lines), model.device)
        )
        tokens = sum(r.tokens for r in results)
        request.state.tokens = tokens
        data = [
            {
                "index": i,
                "text": r.text,
                "tokens": r.tokens,
                "chars": r.chars,
                "logprob": r.logprob,
                "bits_per_char": None if math.isnan(r.bits_per_char) else r.bits_per_char,
            }
            for i, r in enumerate(results)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "model": model.name, "data": data, "usage": usage})

    async def tokenize(self, request: Request) -> Response:
        name, prompt, special, strs = tokens.parse_tokenize(await self._read_json(request), self.limits)
        return JSONResponse(tokens.tokenize(self._model(name), prompt, special, strs, self.limits))

    async def detokenize(self, request: Request) -> Response:
        name, ids = tokens.parse_detokenize(await self._read_json(request), self.limits)
        return JSONResponse(tokens.detokenize(self._model(name), ids))

    async def tokenizer_info(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"model"})
        if unknown:
            raise bad_field(unknown[0], "unknown query parameter (tokenizer_info takes ?model=)")
        model = self._model(request.query_params.get("model"))
        return JSONResponse(tokens.tokenizer_info(model, self.limits, self._template().source))

    def _template(self):
        if self.chat_template is None:
            from charlstm.generation.template import ChatTemplate

            self.chat_template = ChatTemplate.named("plain")
        return self.chat_template

    async def chat_completions(self, request: Request) -> Response:
        template = self._template()
        wanted, messages = chat.parse_chat(await self._read_json(request), self.limits, template)
        model = self._model(wanted.model)
        transcript = chat.render(template, messages, self.limits)
        prompts = [(transcript, chat.encode(model, transcript))]
        return await self._generate(request, wanted, model, prompts, reply_class=chat.ChatReply)

    @staticmethod
    def _encode(model: ServedModel, text: str, field: str) -> list[int]:
        from charlstm.generation.sampling import encode_prime

        try:
            return encode_prime(model.tokenizer, text, field)
        except CharlstmError as e:
            raise bad_field(field, str(e).removeprefix(f"{field} ")) from None

    async def completions(self, request: Request) -> Response:
        wanted = parse_completion(await self._read_json(request), self.limits)
        model = self._model(wanted.model)
        if wanted.sampling.activation is not None:
            layer, unit = wanted.sampling.activation
            config = model.config
            if layer >= config.num_layers or unit >= config.hidden_size:
                raise bad_field(
                    "activation", f"the model has layers 0-{config.num_layers - 1} and units 0-{config.hidden_size - 1}"
                )
        prompts = [tokens.prompt_ids(model, prompt) for prompt in wanted.prompts]
        echoed = None
        if wanted.echo and wanted.sampling.logprobs is not None:  # the prompt's own log-probabilities
            top = wanted.sampling.logprobs
            echoed = await self.batcher.call(
                lambda: [tokens.echo_records(model, ids, top) if asked != "" else None for asked, (_, ids) in zip(wanted.prompts, prompts)]
            )
        return await self._generate(request, wanted, model, prompts, echoed)

    async def _generate(self, request: Request, wanted, model: ServedModel, prompts, echoed=None, reply_class=None) -> Response:
        """Run ``wanted``'s choices for ``prompts`` ((text, ids) each) and answer as
        ``reply_class`` (``CompletionReply``, or the chat reply) answers."""
        _check_sampling(model, wanted.sampling.config)
        seed = wanted.seed if wanted.seed is not None else secrets.randbelow(2**31)
        events: asyncio.Queue = asyncio.Queue()
        choices = [
            Choice(model, i * wanted.n + j, ids, wanted.sampling, (seed + i * wanted.n + j) % (MAX_SEED + 1), events.put_nowait)
            for i, (_, ids) in enumerate(prompts)
            for j in range(wanted.n)
        ]
        prompt_tokens = sum(len(ids) if prompt else 0 for prompt, ids in prompts) * wanted.n
        self.batcher.submit(choices)
        self.metrics.prompt_tokens.labels(model.name).inc(prompt_tokens)
        reply = (reply_class or CompletionReply)(wanted, model.name, seed, [p for p, _ in prompts], prompt_tokens, request)
        if echoed is not None:
            reply.echo_logprobs = echoed
        if wanted.stream:
            return StreamingResponse(
                reply.stream(events, choices),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return JSONResponse(await reply.whole(events, choices))


def _check_sampling(model: ServedModel, config) -> None:
    """What the settings ask of the model's vocabulary (token ids, a pattern it can write): a 400
    naming the field before the request is queued."""
    from charlstm.generation.engine import check_config

    try:
        check_config(config, model.token_bytes, model.device)
    except CharlstmError as e:
        field = "logit_bias" if "--logit-bias" in str(e) else "regex" if config.regex is not None else "response_format"
        raise bad_field(field, str(e)) from None


def create_app(models, **options):
    """The ASGI app serving ``models`` (see ``Server`` for the options)."""
    return Server(models, **options).app
