"""ASGI guard in front of every route: the optional Bearer API key and the request body size limit.

Inference routes (everything under ``/openai/`` and every POST, i.e. V1 ``:predict`` and V2 ``/infer``) need the
key when one is configured; liveness, readiness, model metadata and ``/metrics`` stay open for probes and scrapers.
The body is read here, up to the limit, before any route sees it, so an oversized chunked upload is refused too.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.llm.errors import AuthenticationFailed, BodyTooLarge, LLMError


def needs_key(method: str, path: str) -> bool:
    """Whether a route is an inference route (key required) rather than health/metadata/metrics."""
    return path.startswith("/openai/") or method == "POST"


class GuardMiddleware:
    """Refuse requests without the API key (401) or with a body over ``max_body_bytes`` (413)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, api_key: str | None = None):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._key = api_key.encode("utf-8") if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        try:
            if self._key is not None and needs_key(method, path):
                self._check_key(scope)
            if method not in ("POST", "PUT", "PATCH"):
                await self.app(scope, receive, send)
                return
            body = await self._read_body(scope, receive)
        except LLMError as exc:
            await _send_error(send, exc)
            return

        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later reads wait for http.disconnect, which streams watch for

        await self.app(scope, replay, send)

    def _check_key(self, scope: Scope) -> None:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(token.strip(), self._key):  # type: ignore[arg-type]
            raise AuthenticationFailed("incorrect API key")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body is {int(declared)} bytes, over the limit of {limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


async def _send_error(send: Send, exc: LLMError) -> None:
    body = json.dumps(exc.body()).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
