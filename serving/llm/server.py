"""Wire the predictor into KServe's ModelServer: our routes, error handlers and guard on KServe's FastAPI app, one
:class:`LLMModel` per catalog entry, and the preload running on the server's own event loop.

KServe's ``ModelServer.start`` insists that a model is ready before it serves; we register the models ourselves and
start with an empty list, so the server answers liveness (and a 503 readiness) while the preload models load.
"""

from __future__ import annotations

import asyncio
import socket

from serving.llm import telemetry
from serving.llm.catalog import Catalog
from serving.llm.errors import install_error_handlers
from serving.llm.middleware import GuardMiddleware
from serving.llm.routes import build_router
from serving.llm.service import LLMService
from serving.llm.settings import LLMSettings, SettingsError


def serve(settings: LLMSettings) -> int:
    """Run the predictor until it is stopped; returns the process exit code (1 if a preload model failed)."""
    _check_port_free(settings.http_port)
    catalog = Catalog.load(settings.catalog)
    service = LLMService(settings, catalog, settings.catalog)  # settings errors surface before the heavy imports

    # KServe is imported only now: it parses sys.argv and builds its FastAPI app on import.
    from kserve import model_server

    from serving.llm.model import LLMModel

    models = [LLMModel(entry.name, service) for entry in catalog.models]

    app = model_server.app
    install_error_handlers(app)
    app.include_router(build_router(service))  # before KServe's routes, so our /v2/health/ready wins
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
    )

    server = model_server.ModelServer(http_port=settings.http_port, enable_grpc=False, workers=1)
    for model in models:
        server.register_model(model)

    async def preload() -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        service.start_preload(lambda error: loop.call_soon_threadsafe(done.set_result, error))
        error = await done
        if error is None:
            for model in models:
                model.ready = True
            return
        rest = server._rest_server  # KServe keeps the uvicorn server private; stopping it is the clean exit
        if rest is not None:
            rest._server.should_exit = True

    server.servers.append(preload())
    telemetry.log_event(
        "starting",
        port=settings.http_port,
        catalog=str(settings.catalog),
        models=catalog.names(),
        preload=service.preload,
        max_queue=settings.max_queue,
        n_threads=settings.n_threads,
        memory_budget_mb=settings.memory_budget_mb,
        auth=settings.api_key is not None,
    )
    try:
        server.start([])
    finally:
        service.shutdown()
    if service.preload_error:
        telemetry.log_event("exit", reason=service.preload_error)
        return 1
    return 0


def _check_port_free(port: int) -> None:
    """Fail with one clear line (not uvicorn's traceback) when the port is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise SettingsError(f"--http_port {port}: cannot listen there ({exc.strerror})") from None
