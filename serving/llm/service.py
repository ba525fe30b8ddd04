"""The predictor's core, shared by the OpenAI routes and the KServe V1/V2 model: catalog models in an LRU pool
under a memory budget, one generation slot behind a bounded queue, and generations streamed from a worker thread.

Concurrency model: a llama.cpp context runs one generation at a time and decoding uses every core, so the process
runs one generation at a time. All llama.cpp calls (loads, tokenization, decoding) happen on one dedicated thread;
the slot (:class:`Scheduler`) decides who goes next, and is released only when the worker thread has really finished,
so a cancelled request can never overlap the next one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Callable

from serving.llm import telemetry
from serving.llm.catalog import Catalog, CatalogEntry, CatalogError, resolve_source, verify_sha256
from serving.llm.engine import ChatTemplateMissing, GenerationOutcome, LlamaEngine, SamplingParams
from serving.llm.errors import (
    ContextLengthExceeded,
    GenerationFailed,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    QueueTimeout,
    ServiceUnavailable,
)
from serving.llm.protocol import GenerationRequest, validate_model_name
from serving.llm.settings import LLMSettings, SettingsError

_MIB = 1 << 20


class ModelPool:
    """Loaded engines by name, least recently used first; loads verify sha256 and keep the total under budget.

    Only called from the llama thread, so it needs no lock.
    """

    def __init__(
        self,
        catalog: Catalog,
        catalog_path: Path | None,
        *,
        budget_bytes: int,
        n_threads: int,
        n_batch: int,
        reuse_prefix: bool = False,
    ):
        self.reuse_prefix = reuse_prefix
        self.catalog = catalog
        self.catalog_path = catalog_path
        self.budget_bytes = budget_bytes
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._loaded: collections.OrderedDict[str, LlamaEngine] = collections.OrderedDict()

    def entry(self, name: str) -> CatalogEntry:
        """The catalog entry for a client-supplied name: 400 if path-like, 404 if not in the catalog."""
        validate_model_name(name)
        entry = self.catalog.get(name)
        if entry is None:
            raise ModelNotFound(name)
        return entry

    def loaded_names(self) -> list[str]:
        return list(self._loaded)

    def used_bytes(self) -> int:
        return sum(e.size_bytes for e in self._loaded.values())

    def get(self, name: str) -> LlamaEngine:
        """The engine for ``name``, loading it (and unloading least recently used ones) if needed."""
        engine = self._loaded.get(name)
        if engine is not None:
            self._loaded.move_to_end(name)
            return engine
        entry = self.entry(name)
        try:
            path = resolve_source(entry, self.catalog_path)
            size = path.stat().st_size
            if size > self.budget_bytes:
                raise CatalogError(
                    f"model {name!r} needs {size / _MIB:.0f} MiB, more than memory_budget_mb "
                    f"({self.budget_bytes / _MIB:.0f} MiB)"
                )
            verify_sha256(entry, path)
        except CatalogError as exc:
            telemetry.log_event("model_refused", logging.ERROR, model=name, reason=str(exc))
            raise ModelUnavailable(str(exc), param="model", code="model_unavailable") from None
        while self._loaded and self.used_bytes() + size > self.budget_bytes:
            old_name, old = self._loaded.popitem(last=False)
            old.close()
            telemetry.MODEL_UNLOADS.labels(old_name).inc()
            telemetry.log_event("model_unloaded", model=old_name, reason="lru", bytes=old.size_bytes)
        started = time.monotonic()
        try:
            engine = LlamaEngine.load(
                entry, path, n_threads=self.n_threads, n_batch=self.n_batch, reuse_prefix=self.reuse_prefix
            )
        except Exception as exc:  # llama.cpp and the chat-template compiler raise assorted types
            telemetry.log_event("model_refused", logging.ERROR, model=name, reason=str(exc))
            raise ModelUnavailable(f"model {name!r} failed to load: {exc}", param="model") from None
        self._loaded[name] = engine
        telemetry.MODEL_LOADS.labels(name).inc()
        telemetry.LOADED_MODELS.set(len(self._loaded))
        telemetry.LOADED_BYTES.set(self.used_bytes())
        telemetry.log_event(
            "model_loaded",
            model=name,
            bytes=size,
            seconds=round(time.monotonic() - started, 3),
            context=engine.context_size,
            chat_template=engine.has_chat_template,
        )
        return engine

    def close(self) -> None:
        while self._loaded:
            self._loaded.popitem()[1].close()
        telemetry.LOADED_MODELS.set(0)
        telemetry.LOADED_BYTES.set(0)


class Scheduler:
    """One generation slot with a bounded FIFO of waiters.

    ``acquire`` runs on the event loop; ``release_threadsafe`` may be called from any thread. A full queue raises
    :class:`QueueFull` (429), a wait over ``timeout_s`` raises :class:`QueueTimeout` (503).
    """

    def __init__(self, max_queue: int, timeout_s: float, *, busy: bool = False):
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._busy = busy
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._avg_hold_s = 2.0

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def busy(self) -> bool:
        return self._busy

    def retry_after_s(self) -> int:
        """A hint for Retry-After: the time the queue ahead takes to drain at the recent pace (at least 1 s)."""
        return max(1, math.ceil(self._avg_hold_s * (self.waiting + 1)))

    def record_hold(self, seconds: float) -> None:
        self._avg_hold_s = 0.8 * self._avg_hold_s + 0.2 * seconds

    async def acquire(self) -> None:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            if not self._busy and not self.waiting:
                self._busy = True
                return
            if self.waiting >= self.max_queue:
                raise QueueFull(
                    f"the model is busy and {self.waiting} requests are already waiting (max_queue={self.max_queue}); "
                    "retry later",
                    retry_after_s=self.retry_after_s(),
                )
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append(fut)
        telemetry.QUEUE_DEPTH.set(self.waiting)
        try:
            async with asyncio.timeout(self.timeout_s):
                await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return  # the slot was handed over just as the timer fired: keep it
            raise QueueTimeout(
                f"waited {self.timeout_s:g} s in the queue without getting the model (queue_timeout_s); retry later"
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()
            raise
        finally:
            with self._lock:
                if fut in self._waiters:
                    self._waiters.remove(fut)
            telemetry.QUEUE_DEPTH.set(self.waiting)

    def release(self) -> None:
        """Hand the slot to the oldest live waiter, or mark it free. Call on the event loop thread."""
        with self._lock:
            while self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break
            else:
                self._busy = False
        telemetry.QUEUE_DEPTH.set(self.waiting)

    def release_threadsafe(self) -> None:
        with self._lock:
            loop = self._loop
            if loop is None:
                # No request has arrived yet (startup preload): no waiter can exist.
                self._busy = False
                return
        loop.call_soon_threadsafe(self.release)


class Generation:
    """A running generation as the event loop sees it: text pieces arrive on :meth:`pieces`."""

    def __init__(self, request: GenerationRequest, prompt_tokens: int, loop: asyncio.AbstractEventLoop):
        self.id = uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.request = request
        self.prompt_tokens = prompt_tokens
        self.cancel_event = threading.Event()
        self.cancel_requested_at: float | None = None
        self.outcome: GenerationOutcome | None = None
        self.error: BaseException | None = None
        self._loop = loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()

    def emit_threadsafe(self, text: str) -> None:
        """Hand a piece to the event loop; pieces that arrive while it is busy are merged into one wake-up."""
        with self._pending_lock:
            self._pending.append(text)
            if len(self._pending) > 1:
                return  # a flush is already scheduled and will take this piece too
        self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self._pending_lock:
            text = "".join(self._pending)
            self._pending.clear()
        if text:
            self._queue.put_nowait(text)

    def finish_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)

    def cancel(self) -> None:
        """Ask the worker to stop after the current token (safe to call more than once, from anywhere)."""
        if not self.cancel_event.is_set():
            self.cancel_requested_at = time.monotonic()
            self.cancel_event.set()

    @property
    def done(self) -> bool:
        return self.outcome is not None or self.error is not None

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces as they are generated; raises :class:`GenerationFailed` if the worker failed."""
        while True:
            piece = await self._queue.get()
            if piece is None:
                if self.error is not None:
                    raise GenerationFailed(f"generation failed: {self.error}")
                return
            yield piece

    async def text(self) -> str:
        """The whole completion (non-streaming); cancels the worker if this waiter is cancelled."""
        try:
            return "".join([p async for p in self.pieces()])
        finally:
            if not self.done:
                self.cancel()


@dataclass
class _Prepared:
    engine: LlamaEngine
    tokens: list[int]
    params: SamplingParams


class LLMService:
    """Catalog + pool + scheduler + llama thread. Create one per process; call :meth:`start_preload` once."""

    def __init__(self, settings: LLMSettings, catalog: Catalog, catalog_path: Path | None):
        self.settings = settings
        self.catalog = catalog
        self.pool = ModelPool(
            catalog,
            catalog_path,
            budget_bytes=settings.memory_budget_mb * _MIB,
            n_threads=settings.n_threads,
            n_batch=settings.n_batch,
            reuse_prefix=settings.reuse_prompt_prefix,
        )
        names = settings.preload_names(catalog.names())
        self.preload = self._fit_preload(catalog.names() if names == "*" else names, strict=names != "*")
        self.scheduler = Scheduler(settings.max_queue, settings.queue_timeout_s, busy=bool(self.preload))
        self._llama = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self.ready = threading.Event()
        self.loaded_preloads: set[str] = set()
        self.preload_error: str | None = None

    def _fit_preload(self, names: list[str], *, strict: bool) -> list[str]:
        """Preload in catalog order while within budget; an explicit list that cannot fit is a settings error."""
        chosen, used = [], 0
        for name in names:
            entry = self.catalog.get(name)
            try:
                size = resolve_source(entry, self.pool.catalog_path).stat().st_size  # type: ignore[arg-type]
            except CatalogError:
                if strict:
                    raise
                telemetry.log_event("preload_skipped", logging.WARNING, model=name, reason="source not available")
                continue
            if used + size > self.pool.budget_bytes:
                if strict:
                    budget = self.settings.memory_budget_mb
                    raise SettingsError(f"--preload: {', '.join(names)} need more than --memory_budget_mb={budget}")
                telemetry.log_event("preload_skipped", model=name, reason="memory budget")
                continue
            chosen.append(name)
            used += size
        return chosen

    # -- start-up ---------------------------------------------------------------------------------------------

    def start_preload(self, on_done: Callable[[str | None], None]) -> None:
        """Load the preload models on the llama thread; ``on_done(error_message_or_None)`` when finished.

        The scheduler starts busy when there is something to preload, so requests that arrive meanwhile queue.
        """
        self._llama.submit(self._preload, on_done)

    def _preload(self, on_done: Callable[[str | None], None]) -> None:
        error = None
        try:
            for name in self.preload:
                self.pool.get(name)
                self.loaded_preloads.add(name)
        except ModelUnavailable as exc:
            error = f"preload of {name!r} failed: {exc.message}"
        except Exception as exc:  # whatever it is, the process must not sit unready forever
            error = f"preload of {name!r} failed: {exc!r}"
        finally:
            self.preload_error = error
            if error is None:
                self.ready.set()
                telemetry.log_event("ready", preloaded=self.preload)
            else:
                telemetry.log_event("preload_failed", logging.ERROR, reason=error)
            if self.preload:
                self.scheduler.release_threadsafe()
            on_done(error)

    def load_blocking(self, name: str) -> None:
        """Load ``name`` on the llama thread and wait (KServe's ``Model.load``)."""
        self._llama.submit(self.pool.get, name).result()

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Free the models once the running generation (if any) has ended."""
        try:
            self._llama.submit(self.pool.close).result(timeout=timeout_s)
        except FutureTimeout:
            telemetry.log_event("shutdown_timeout", logging.WARNING, seconds=timeout_s)
        self._llama.shutdown(wait=False, cancel_futures=True)

    # -- requests ---------------------------------------------------------------------------------------------

    def readiness(self) -> tuple[bool, str]:
        """(ready, why not): ready once every preload model is loaded."""
        if self.ready.is_set():
            return True, "ready"
        if self.preload_error:
            return False, self.preload_error
        pending = [n for n in self.preload if n not in self.loaded_preloads]
        return False, f"loading {', '.join(pending)}"

    async def start(self, request: GenerationRequest, *, arrived: float | None = None) -> Generation:
        """Queue for the model, prepare the prompt, and start generating. Errors raise before anything streams."""
        arrived = arrived or time.monotonic()
        self.pool.entry(request.model)  # 400/404 before taking a queue place
        if self.preload_error:
            raise ServiceUnavailable(f"the server is not ready: {self.preload_error}")
        await self.scheduler.acquire()
        loop = asyncio.get_running_loop()
        generation = Generation(request, 0, loop)
        prepared_fut: asyncio.Future[None] = loop.create_future()
        deadline = time.monotonic() + self.settings.generation_timeout_s

        def settle(error: BaseException | None) -> None:
            if prepared_fut.done():
                return
            if error is None:
                prepared_fut.set_result(None)
            else:
                prepared_fut.set_exception(error)

        def job() -> None:
            # Prepare and generate in one llama-thread job: no hop back to the event loop before the first token.
            try:
                prepared = self._prepare(request)
            except BaseException as exc:
                loop.call_soon_threadsafe(settle, exc)
                return
            generation.prompt_tokens = len(prepared.tokens)
            loop.call_soon_threadsafe(settle, None)
            self._run(prepared, generation, deadline, arrived)

        took_slot = time.monotonic()
        worker = loop.run_in_executor(self._llama, job)

        def finished(_: object) -> None:
            self.scheduler.record_hold(time.monotonic() - took_slot)
            self.scheduler.release()

        worker.add_done_callback(finished)
        try:
            await prepared_fut
        except asyncio.CancelledError:
            generation.cancel()  # the client left while the prompt was being prepared
            raise
        return generation

    def _prepare(self, request: GenerationRequest) -> _Prepared:
        engine = self.pool.get(request.model)
        entry = engine.entry
        try:
            text = engine.chat_prompt(self._chat_messages(entry, request)) if request.kind == "chat" else request.prompt
        except ChatTemplateMissing as exc:
            raise InvalidRequest(str(exc), param="messages") from None
        except ValueError as exc:  # the template's own raise_exception(): e.g. roles out of order
            raise InvalidRequest(f"the model's chat template refused the messages: {exc}", param="messages") from None
        tokens = engine.tokenize(text)  # type: ignore[arg-type]
        if not tokens:
            raise InvalidRequest(f"{request.prompt_param} has no tokens", param=request.prompt_param)
        context = engine.context_size
        if request.max_tokens is not None:
            max_tokens = request.max_tokens
            if len(tokens) + max_tokens > context:
                raise ContextLengthExceeded(
                    context=context, prompt_tokens=len(tokens), max_tokens=max_tokens, param=request.prompt_param
                )
        else:
            max_tokens = min(entry.generation.max_tokens, self.settings.max_tokens_cap, context - len(tokens))
            if max_tokens < 1:
                raise ContextLengthExceeded(
                    context=context, prompt_tokens=len(tokens), max_tokens=1, param=request.prompt_param
                )
        defaults = entry.generation
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
            stop=tuple(defaults.stop) if request.stop is None else request.stop,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )
        return _Prepared(engine, tokens, params)

    @staticmethod
    def _chat_messages(entry: CatalogEntry, request: GenerationRequest) -> list[dict[str, str]]:
        messages = [{"role": r, "content": c} for r, c in request.messages]
        if entry.system_prompt and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": entry.system_prompt})
        return messages

    def _run(self, prepared: _Prepared, generation: Generation, deadline: float, arrived: float) -> None:
        model = prepared.engine.entry.name
        telemetry.ACTIVE.set(1)
        try:
            if generation.cancel_event.is_set():
                outcome = GenerationOutcome("cancelled", len(prepared.tokens), 0, arrived, finished=time.monotonic())
            else:
                outcome = prepared.engine.generate(
                    prepared.tokens,
                    prepared.params,
                    emit=generation.emit_threadsafe,
                    cancel=generation.cancel_event,
                    deadline=deadline,
                    started=arrived,
                )
            generation.outcome = outcome
        except Exception as exc:  # llama.cpp failures surface as assorted exception types
            generation.error = exc
            telemetry.log_event("generation_failed", logging.ERROR, id=generation.id, model=model, error=repr(exc))
            return
        finally:
            telemetry.ACTIVE.set(0)
            generation.finish_threadsafe()
        telemetry.GENERATIONS.labels(model, outcome.finish_reason).inc()
        if outcome.finish_reason == "cancelled" and generation.cancel_requested_at is not None:
            telemetry.CANCEL_LATENCY.observe(max(0.0, time.monotonic() - generation.cancel_requested_at))
        telemetry.PROMPT_TOKENS.labels(model).inc(outcome.prompt_tokens)
        telemetry.GENERATED_TOKENS.labels(model).inc(outcome.completion_tokens)
        ttft = None
        if outcome.first_token_at is not None:
            ttft = outcome.first_token_at - arrived
            telemetry.TIME_TO_FIRST_TOKEN.labels(model).observe(ttft)
        rate = outcome.decode_tokens_per_s
        if rate is not None:
            telemetry.DECODE_RATE.labels(model).observe(rate)
        telemetry.log_event(
            "generation",
            id=generation.id,
            model=model,
            kind=generation.request.kind,
            stream=generation.request.stream,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            finish_reason=outcome.finish_reason,
            timed_out=outcome.timed_out,
            ttft_s=None if ttft is None else round(ttft, 4),
            tokens_per_s=None if rate is None else round(rate, 1),
            seconds=round(outcome.finished - arrived, 3),
        )
