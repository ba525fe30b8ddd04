"""Our OpenAI-compatible routes (KServe 0.21's own need vLLM) and the readiness route, added to KServe's FastAPI app.

``POST /openai/v1/chat/completions`` and ``POST /openai/v1/completions`` stream as Server-Sent Events ending in
``data: [DONE]`` when ``stream`` is true; ``GET /openai/v1/models`` lists the catalog. Streams watch for the client's
disconnect themselves and cancel the generation at once, whatever the ASGI server's disconnect reporting.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from serving.llm import telemetry
from serving.llm.errors import InvalidRequest, LLMError
from serving.llm.protocol import GenerationRequest, parse_chat_request, parse_completion_request
from serving.llm.service import Generation, LLMService

OPENAI_PREFIX = "/openai/v1"


class GenerationStream(StreamingResponse):
    """An SSE response that cancels its generation when the client goes away or the response ends early."""

    def __init__(self, content: AsyncIterator[str], generation: Generation):
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.generation))
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                if self.generation.cancel_event.is_set():
                    break
                await send({"type": "http.response.body", "body": chunk.encode("utf-8"), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone; the finally below stops the generation
        finally:
            watcher.cancel()
            self.generation.cancel()


async def _cancel_on_disconnect(receive: Receive, generation: Generation) -> None:
    """Cancel ``generation`` when the client goes away (the body has been read, so the next message is that)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            generation.cancel()
            return


def build_router(service: LLMService) -> APIRouter:
    """The OpenAI routes plus ``GET /v2/health/ready`` (ready only once the preload models are loaded)."""
    router = APIRouter()
    cap = service.settings.max_tokens_cap

    @router.get("/v2/health/ready", tags=["health"])
    async def ready() -> JSONResponse:
        is_ready, why = service.readiness()
        if is_ready:
            return JSONResponse({"ready": True})
        return JSONResponse(
            {
                "ready": False,
                "error": {"message": f"not ready: {why}", "type": "server_error", "param": None, "code": "not_ready"},
            },
            status_code=503,
        )

    @router.get(f"{OPENAI_PREFIX}/models", tags=["openai"])
    async def list_models() -> JSONResponse:
        loaded = set(service.pool.loaded_names())
        data = [
            {
                "id": entry.name,
                "object": "model",
                "created": 0,
                "owned_by": "ragtune",
                "description": entry.description,
                "quantization": entry.quantization,
                "context_size": entry.context_size,
                "base_model": entry.base_model,
                "tags": entry.tags,
                "metrics": entry.metrics,
                "loaded": entry.name in loaded,
            }
            for entry in service.catalog.models
        ]
        telemetry.REQUESTS.labels("models", "-", "200").inc()
        return JSONResponse({"object": "list", "data": data})

    @router.post(f"{OPENAI_PREFIX}/chat/completions", tags=["openai"])
    async def chat_completions(request: Request) -> Any:
        return await _serve(request, "chat", lambda body: parse_chat_request(body, max_tokens_cap=cap))

    @router.post(f"{OPENAI_PREFIX}/completions", tags=["openai"])
    async def completions(request: Request) -> Any:
        return await _serve(request, "completions", lambda body: parse_completion_request(body, max_tokens_cap=cap))

    async def _serve(request: Request, endpoint: str, parse: Callable[[Any], GenerationRequest]) -> Any:
        arrived = time.monotonic()
        model_label = "-"
        try:
            body = await _json_body(request)
            req = parse(body)
            model_label = req.model if service.catalog.get(req.model) else "-"
            generation = await service.start(req, arrived=arrived)
        except LLMError as exc:
            telemetry.REQUESTS.labels(endpoint, model_label, str(exc.status)).inc()
            raise
        telemetry.REQUESTS.labels(endpoint, model_label, "200").inc()
        if req.stream:
            return GenerationStream(_sse(generation), generation)
        watcher = asyncio.create_task(_cancel_on_disconnect(request.receive, generation))
        try:
            text = await generation.text()
        finally:
            watcher.cancel()
        return JSONResponse(_response_body(generation, text))

    return router


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object", code="invalid_json")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}", code="invalid_json") from None


def _usage(generation: Generation) -> dict[str, int]:
    completion = generation.outcome.completion_tokens if generation.outcome else 0
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": generation.prompt_tokens + completion,
    }


def _finish_reason(generation: Generation) -> str:
    reason = generation.outcome.finish_reason if generation.outcome else "stop"
    return "length" if reason == "cancelled" else reason


def _response_body(generation: Generation, text: str) -> dict[str, Any]:
    req = generation.request
    if req.kind == "chat":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": _finish_reason(generation),
        }
        obj, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _finish_reason(generation)}
        obj, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + generation.id,
        "object": obj,
        "created": generation.created,
        "model": req.model,
        "choices": [choice],
        "usage": _usage(generation),
    }


async def _sse(generation: Generation) -> AsyncIterator[str]:
    req = generation.request
    chat = req.kind == "chat"
    head = {
        "id": ("chatcmpl-" if chat else "cmpl-") + generation.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": generation.created,
        "model": req.model,
    }

    def chunk(content: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
            if content is not None:
                delta["content"] = content
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": content or "", "logprobs": None, "finish_reason": finish}
        return _event({**head, "choices": [choice]})

    if chat:
        yield chunk(None, None, first=True)
    try:
        async for piece in generation.pieces():
            yield chunk(piece, None)
    except LLMError as exc:
        yield _event(exc.body())
        yield "data: [DONE]\n\n"
        return
    yield chunk(None, _finish_reason(generation))
    if req.include_usage:
        yield _event({**head, "choices": [], "usage": _usage(generation)})
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"
