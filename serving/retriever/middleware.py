"""What the retriever adds to KServe's FastAPI app: a request guard, error handlers and a real readiness route.

- :class:`RequestGuard` (ASGI middleware) rejects a body over the limit with 413 before anything parses it, and a
  malformed JSON body on an inference route with 400 naming ``body``; KServe would otherwise answer the first with
  whatever its parser does and the second with a message that names no field. A well-formed plain JSON V1
  ``:predict`` request then takes the fast path (:mod:`serving.retriever.fast_path`).
- KServe's per-request timing middleware (two ``kserve.trace`` log lines per request, and a scan of every route to
  name them) is left out unless latency logging is on.
- FastAPI's 422 for a V2 body that does not fit the schema becomes 400 naming the field.
- JSON sent as ``application/x-www-form-urlencoded`` (what ``curl -d`` does) or with parameters
  (``application/json; charset=utf-8``) is read as JSON.
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
from serving.retriever.fast_path import V1FastPath

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_INFERENCE_PATH = re.compile(r"^/v[12]/models/[^/]+(/versions/[^/]+)?(:predict|:explain|/infer)$")
_JSON_TYPES = {"application/json", "application/cloudevents+json", "application/ld+json", ""}
_V2_JSON_LENGTH = b"inference-header-content-length"
_CURL_DEFAULT_TYPE = b"application/x-www-form-urlencoded"


class RequestGuard:
    """ASGI middleware: body size limit (413) and JSON well-formedness (400) on inference routes."""

    def __init__(self, app: Callable, max_body_bytes: int, fast_path: V1FastPath | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path

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
            declared_type = headers.get(b"content-type")
            bare_type = _bare_json_type(declared_type) if _V2_JSON_LENGTH not in headers else None
            if bare_type is not None and bare_type != declared_type:
                headers[b"content-type"] = bare_type
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
                         + [(b"content-type", bare_type)]}
            problem, parsed = _parse_json(body, headers)
            if problem is not None:
                await _reply(send, scope, HTTPStatus.BAD_REQUEST, *problem)
                return
            if self.fast_path is not None and self.fast_path.accepts(scope, headers, parsed):
                await self.fast_path.serve(scope, receive, send, parsed)
                return

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _bare_json_type(declared: bytes | None) -> bytes | None:
    """The content type KServe reads as JSON for a JSON body declared as ``declared``; None to leave it alone.

    KServe compares the whole header value, so ``application/json; charset=utf-8`` would reach the model as raw bytes,
    and ``curl -d '{...}'`` labels JSON ``application/x-www-form-urlencoded``.
    """
    if declared is None:
        return None
    media = declared.split(b";")[0].strip().lower()
    if media == _CURL_DEFAULT_TYPE:
        return b"application/json"
    return media if media.decode("latin-1") in _JSON_TYPES and media else None


def _parse_json(body: bytes, headers: dict[bytes, bytes]) -> tuple[tuple[str, str] | None, Any]:
    """``(problem, parsed)``: problem is (field, message) when the JSON part of an inference body does not parse.

    ``parsed`` is the decoded JSON of a JSON body, and None for a V2 binary body or a non-JSON content type.
    """
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1").lower()
    json_part = body
    if _V2_JSON_LENGTH in headers:
        # V2 binary extension: a JSON header of the given length, then raw tensor bytes.
        try:
            length = int(headers[_V2_JSON_LENGTH])
        except ValueError:
            return (_V2_JSON_LENGTH.decode(), "must be an integer"), None
        if not 0 < length <= len(body):
            return (_V2_JSON_LENGTH.decode(), f"must be between 1 and the body size ({len(body)}), got {length}"), None
        json_part = body[:length]
    elif content_type not in _JSON_TYPES:
        return None, None
    try:
        parsed = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        return ("body", f"malformed JSON: {exc}"), None
    return None, (None if _V2_JSON_LENGTH in headers else parsed)


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


def install(
    app: FastAPI,
    *,
    max_body_bytes: int,
    is_ready: Callable[[], bool],
    model_name: str,
    fast_path_model: Any = None,
    latency_logging: bool = False,
) -> None:
    """Add the guard, the error handlers and the readiness route to KServe's app (before the server starts).

    ``fast_path_model``: the model the V1 fast path serves (None: every request goes through KServe's stack).
    ``latency_logging``: keep KServe's per-request timing middleware (``--enable_latency_logging``).
    """
    fast_path = V1FastPath(app, fast_path_model) if fast_path_model is not None else None
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes, fast_path=fast_path)
    if not latency_logging:
        _leave_out_kserve_timing(app)
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


def _leave_out_kserve_timing(app: FastAPI) -> None:
    """Build the app's middleware stack without KServe's ``TimingMiddleware``.

    KServe adds it when the server starts, after :func:`install` runs, so it is filtered out when Starlette builds the
    stack (on the first request). It only writes the two ``kserve.trace`` lines per request, and costs ~0.3 ms of CPU
    per request on a 2-core node, mostly matching the path against every route to name the line; the retriever's
    stage histograms and the access log cover the same ground.
    """
    from timing_asgi import TimingMiddleware

    build = app.build_middleware_stack

    def build_without_timing():
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TimingMiddleware]
        return build()

    app.build_middleware_stack = build_without_timing
