"""The ASGI middleware around every request: the API key, the body limit, the 500 of last
resort (its traceback logged here, never sent), metrics, and one log line per request."""

from __future__ import annotations

import hmac
import logging
import time

from starlette.responses import JSONResponse

from charlstm.serving.errors import ApiError

log = logging.getLogger("charlstm.serve")

OPEN_PATHS = {"/", "/page.js", "/health", "/openapi.json", "/favicon.ico"}  # no API key needed
ROUTED = {
    "/", "/page.js", "/health", "/metrics", "/openapi.json", "/v1/completions", "/v1/chat/completions", "/v1/models",
    "/v1/score", "/tokenize", "/detokenize", "/tokenizer_info",
}  # fmt: skip


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def guard(app, server):
    """``app`` behind ``server``'s key and limits (``server.api_key``, ``server.limits``,
    ``server.metrics``)."""
    async def guarded(scope, receive, send):
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        status = {"code": 0}
        scope.setdefault("state", {})["tokens"] = 0

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refused = refusal(scope, server)
            if refused is not None:
                await _error_response(refused)(scope, receive, sending)
            else:
                await app(scope, receive, sending)
        except Exception:
            log.exception("%s %s failed", method, path)  # a bug on this side: its traceback, here only
            if not status["code"]:
                error = ApiError(500, "internal server error (logged on the server)", type="server_error")
                await _error_response(error)(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - started
            code = status["code"] or 499  # 499: the client left before an answer started
            server.metrics.request(path if path in ROUTED else "other", code)
            tokens = scope["state"].get("tokens", 0)
            log.info("%s %s %d %d tokens %.3f s", method, path, code, tokens, seconds)

    return guarded


def refusal(scope, server) -> ApiError | None:
    """401 without the key (where one is needed), 413 for a body declared over the limit."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if server.api_key is not None and scope["path"] not in OPEN_PATHS and scope["method"] != "OPTIONS":
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), server.api_key.encode()):
            return ApiError(
                401,
                "missing or wrong API key: send the header 'Authorization: Bearer KEY'",
                type="authentication_error",
                code="invalid_api_key",
            )
    length = headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > server.limits.max_body_bytes):
        return server._too_large()
    return None
