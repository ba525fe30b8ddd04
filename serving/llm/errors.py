"""Typed errors of the LLM predictor and their OpenAI-style JSON: ``{"error": {"message", "type", "param", "code"}}``.

Every error a client can cause maps to a 4xx here; the same handler serves the OpenAI routes and the KServe V1/V2
routes, so a client sees one error shape from the whole process.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class LLMError(Exception):
    """Base: an HTTP status, an OpenAI error type, the offending parameter and a machine-readable code."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(LLMError):
    """400: the body is malformed or a value is out of range."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class UnsupportedParameter(InvalidRequest):
    """400: a parameter this server does not implement (n > 1, tools, logprobs, ...)."""

    code = "unsupported_parameter"


class ContextLengthExceeded(InvalidRequest):
    """400: prompt + max_tokens do not fit the model's context."""

    code = "context_length_exceeded"

    def __init__(self, *, context: int, prompt_tokens: int, max_tokens: int, param: str):
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {param}, {max_tokens} in the completion). "
            f"Please reduce the length of the {param} or max_tokens.",
            param=param,
        )
        self.context = context
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens


class AuthenticationFailed(LLMError):
    """401: the API key is missing or wrong."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFound(LLMError):
    """404: the model is not in the catalog."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, name: str):
        super().__init__(f"The model {name!r} does not exist in this server's catalog.", param="model")


class BodyTooLarge(LLMError):
    """413: the request body is over the configured limit."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class QueueFull(LLMError):
    """429: the wait queue is full; retry after the given seconds."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceUnavailable(LLMError):
    """503: not ready yet, waited too long in the queue, or a model cannot be loaded."""

    status = 503
    type = "server_error"
    code = "unavailable"


class QueueTimeout(ServiceUnavailable):
    code = "queue_timeout"


class ModelUnavailable(ServiceUnavailable):
    code = "model_unavailable"


class GenerationFailed(LLMError):
    """500: llama.cpp failed while generating (not a client mistake)."""

    code = "generation_failed"


async def llm_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LLMError)
    return JSONResponse(status_code=exc.status, content=exc.body(), headers=exc.headers())


def install_error_handlers(app: FastAPI) -> None:
    """Map every :class:`LLMError` raised by a route (ours or KServe's V1/V2 ones) to its JSON response."""
    app.add_exception_handler(LLMError, llm_error_handler)
