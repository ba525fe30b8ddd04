"""What the retriever adds to KServe's FastAPI app: a request guard, error handlers and a real readiness route.

- :class:`RequestGuard` (ASGI middleware) rejects a body over the limit with 413 before anything parses it, and a
  malformed JSON body on an inference route with 400 naming ``body``; KServe would otherwise answer the first with
  whatever its parser does and the second with a message that names no field.
- FastAPI's 422 for a V2 body that does not fit the schema becomes 400 naming the field.
- JSON sent as ``application/x-www-form-urlencoded`` (what ``curl -d`` does) is read as JSON.
- ``/v2/health/ready`` reports the retriever's readiness; KServe's always answers ready, even while loading.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Awaitable, Callable

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from serving.retriever.errors import (
    InvalidRequest,
    PayloadTooLarge,
    error_body,
    invalid_request_handler,
    request_validation_handler,
)
from serving.retriever.events import log_event

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_INFERENCE_PATH = re.compile(r"^/v[12]/models/[^/]+(/versions/[^/]+)?(:predict|:explain|/infer)$")
_JSON_TYPES = {"application/json", "application/cloudevents+json", "application/ld+json", ""}
_V2_JSON_LENGTH = b"inference-header-content-length"
_CURL_DEFAULT_TYPE = b"application/x-www-form-urlencoded"


class RequestGuard:
    """ASGI middleware: body size limit (413) and JSON well-formedness (400) on inference routes."""

    def __init__(self, app: Callable, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _reply(send, scope, HTTPStatus.BAD_REQUEST, "content-length", "must be an integer")
                return
            if size > self.max_body_bytes:
                exc = PayloadTooLarge(self.max_body_bytes, size)
                await _reply(send, scope, exc.status, exc.field, str(exc))
                return

        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                exc = PayloadTooLarge(self.max_body_bytes)
                await _reply(send, scope, exc.status, exc.field, str(exc))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)

        if _INFERENCE_PATH.match(scope.get("path", "")):
            if headers.get(b"content-type", b"").startswith(_CURL_DEFAULT_TYPE) and _V2_JSON_LENGTH not in headers:
                # `curl -d '{...}'` sends JSON labelled as a form; KServe would pass it on as raw bytes.
                headers[b"content-type"] = b"application/json"
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                         + [(b"content-type", b"application/json")]}
            problem = _json_problem(body, headers)
            if problem is not None:
                await _reply(send, scope, HTTPStatus.BAD_REQUEST, *problem)
                return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _json_problem(body: bytes, headers: dict[bytes, bytes]) -> tuple[str, str] | None:
    """(field, message) when the JSON part of an inference body does not parse; None when it does."""
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1").lower()
    json_part = body
    if _V2_JSON_LENGTH in headers:
        # V2 binary extension: a JSON header of the given length, then raw tensor bytes.
        try:
            length = int(headers[_V2_JSON_LENGTH])
        except ValueError:
            return _V2_JSON_LENGTH.decode(), "must be an integer"
        if not 0 < length <= len(body):
            return _V2_JSON_LENGTH.decode(), f"must be between 1 and the body size ({len(body)}), got {length}"
        json_part = body[:length]
    elif content_type not in _JSON_TYPES:
        return None
    try:
        orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        return "body", f"malformed JSON: {exc}"
    return None


async def _reply(send: Send, scope: Scope, status: int, field: str, message: str) -> None:
    log_event("request_rejected", status=int(status), path=scope.get("path"), field=field, reason=message)
    payload = orjson.dumps(error_body(field, message))
    await send(
        {
            "type": "http.response.start",
            "status": int(status),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def install(app: FastAPI, *, max_body_bytes: int, is_ready: Callable[[], bool], model_name: str) -> None:
    """Add the guard, the error handlers and the readiness route to KServe's app (before the server starts)."""
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)
    app.add_exception_handler(InvalidRequest, invalid_request_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)

    async def server_ready() -> JSONResponse:
        if is_ready():
            return JSONResponse({"ready": True})
        return JSONResponse(
            status_code=HTTPStatus.SERVICE_UNAVAILABLE,
            content={"ready": False, "error": f"Server is not ready: model {model_name} is loading its index."},
        )

    # Routes match in order; this one is added before KServe registers its own /v2/health/ready.
    app.add_api_route("/v2/health/ready", server_ready, methods=["GET"], include_in_schema=False)
