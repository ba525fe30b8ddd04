"""The V1 predict fast path: a plain JSON ``:predict`` request goes straight from the request guard to the model.

KServe's V1 route spends about 1 ms of a 2-core node's CPU on every request before and after the model runs: FastAPI
routing and dependency resolution, the dataplane's registry lookups, decode and encode, and the response class
(measured in docs/benchmarks.md). A single query against a 1k-chunk index takes ~9 ms in all, so that is over 10 %.
The request guard has already read and parsed the body; for a request this module accepts (:func:`accepts`), it calls
the model exactly as KServe's dataplane does, ``await model(body, headers)`` (preprocess, validate, predict,
postprocess, with KServe's latency histograms), and answers with the same response class KServe uses. A failure is
answered by the exception handler the app has registered for it, so status codes and JSON bodies do not depend on
which path served the request.

Everything else goes through KServe's stack unchanged: V2, CloudEvents (structured or binary), bodies that are not a
JSON object, content types KServe does not read as JSON, other paths and a model that is not ready (KServe's 503).
``--v1_fast_path false`` (``RAGTUNE_RETRIEVER_V1_FAST_PATH=false``) turns it off.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from prometheus_client import Counter
from starlette.requests import Request

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# What KServe's dataplane reads as JSON without CloudEvent handling (kserve.protocol.dataplane.decode/encode); the
# comparison is on the whole header value, as KServe's is.
_PLAIN_JSON_TYPES = {"application/json", "application/ld+json"}

FAST_PATH_REQUESTS = Counter(
    "ragtune_retriever_fast_path_requests", "V1 :predict requests served by the fast path", ["model_name"]
)


class V1FastPath:
    """Serves ``POST /v1/models/<name>:predict`` for one model, bypassing FastAPI routing and KServe's dataplane."""

    def __init__(self, app: FastAPI, model: Any):
        self.app = app
        self.model = model
        self.path = f"/v1/models/{model.name}:predict"

    def accepts(self, scope: Scope, headers: dict[bytes, bytes], body: Any) -> bool:
        """True when KServe would hand this request to the model as a plain dict and answer plain JSON."""
        if scope.get("path") != self.path or not getattr(self.model, "ready", False):
            return False
        content_type = headers.get(b"content-type")
        if content_type is not None and content_type.decode("latin-1") not in _PLAIN_JSON_TYPES:
            return False
        if any(name.startswith(b"ce-") for name in headers):  # binary-mode CloudEvent
            return False
        # A structured CloudEvent is a JSON object with "specversion"; KServe unwraps and re-wraps it.
        return isinstance(body, dict) and "specversion" not in body

    async def serve(self, scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
        """Run the model on ``body`` and send its answer, or the app's error response for what it raised."""
        FAST_PATH_REQUESTS.labels(model_name=self.model.name).inc()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        try:
            result, response_headers = await self.model(body, headers=headers)
        except Exception as exc:  # answered by the app's own handler for this exception type, as on KServe's path
            handler = self._handler_for(exc)
            if handler is None:
                raise
            response = await handler(Request(scope, receive), exc)
        else:
            response_headers.pop("content-length", None)
            response = ORJSONResponse(content=result, headers=response_headers)
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Callable | None:
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None
