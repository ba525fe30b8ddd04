"""Readiness and Prometheus metrics routes on Chainlit's own FastAPI app.

Chainlit already answers ``GET /health`` (liveness). This adds ``GET /readyz`` (both predictors answer: the
retriever's model is ready and the LLM lists at least one model) and ``GET /metrics``. Chainlit ends its routes with a
catch-all for the web app, so ours are moved in front of it.
"""

from __future__ import annotations

import asyncio

from fastapi import Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from frontend.settings import ChatSettings

_PATHS = ("/readyz", "/metrics")


def install(settings: ChatSettings) -> None:
    """Register ``/readyz`` and ``/metrics`` on ``chainlit.server.app`` (once per process)."""
    from chainlit.server import app  # imported here: building the app reads Chainlit's config

    if any(isinstance(r, APIRoute) and r.path in _PATHS for r in app.router.routes):
        return

    async def readyz() -> JSONResponse:
        from frontend.clients import LLMClient, RetrieverClient, ServiceError

        retriever, llm = RetrieverClient(settings), LLMClient(settings)
        try:
            retriever_ok, models = await asyncio.gather(retriever.ready(), llm.list_models(), return_exceptions=True)
        finally:
            await asyncio.gather(retriever.aclose(), llm.aclose())
        checks = {
            "retriever": retriever_ok is True,
            "llm": not isinstance(models, BaseException) and len(models) > 0,
        }
        if isinstance(models, BaseException) and not isinstance(models, ServiceError):
            raise models
        return JSONResponse({"ready": all(checks.values()), "checks": checks}, status_code=200 if all(checks.values()) else 503)

    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    ours = [r for r in app.router.routes if isinstance(r, APIRoute) and r.path in _PATHS]
    others = [r for r in app.router.routes if r not in ours]
    app.router.routes[:] = ours + others
