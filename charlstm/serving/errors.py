"""Errors a client gets, in OpenAI's shape, so OpenAI clients read them as they read OpenAI's."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server refuses: the HTTP status, one line saying why, and the field at fault.

    ``type`` follows OpenAI's names (``invalid_request_error``, ``authentication_error``, ...);
    ``headers`` are sent with it (``Retry-After`` on a 503)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_field(param: str, message: str) -> ApiError:
    """400 for one field: ``message`` says what is wrong with ``param``."""
    return ApiError(400, f"{param}: {message}", param=param, code="invalid_value")


def server_busy(message: str, retry_after: int) -> ApiError:
    """503 with ``Retry-After`` (OpenAI clients wait that long and try again by themselves)."""
    return ApiError(
        503, message, type="server_error", code="server_busy", headers={"Retry-After": str(retry_after)}
    )
