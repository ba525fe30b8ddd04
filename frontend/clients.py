"""HTTP clients for the two predictors, with time limits, a bounded retry when the LLM is busy, and typed errors.

- :class:`RetrieverClient` speaks KServe V1 to the retriever: ``POST /v1/models/{name}:predict`` with
  ``{"instances": [{"query", "top_k"}]}``, answered by one list of hits per instance.
- :class:`LLMClient` speaks the OpenAI API to the LLM predictor (``/openai/v1/models``,
  ``/openai/v1/chat/completions`` streamed as server-sent events) through the ``openai`` SDK.

Every failure becomes a :class:`ServiceError` whose ``user_message`` is safe to show in the chat: it says what
happened and what to do, and never holds a stack trace, a URL with credentials, or an API key.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from frontend.events import BUSY_RETRIES, RETRIEVAL, UPSTREAM_ERRORS, log_event
from frontend.rag import Passage
from frontend.settings import ChatSettings

# -- errors -----------------------------------------------------------------------------------------------------


class ServiceError(Exception):
    """A predictor call failed. ``user_message`` is what the chat shows."""

    kind = "error"

    def __init__(self, service: str, user_message: str, detail: str = ""):
        self.service, self.user_message, self.detail = service, user_message, detail
        super().__init__(f"{service}: {detail or user_message}")


class ServiceDown(ServiceError):
    """Nothing answers at the service's address."""

    kind = "down"


class ServiceTimeout(ServiceError):
    """The service did not answer in time."""

    kind = "timeout"


class ModelNotReady(ServiceError):
    """The service answers but its model is not loaded yet (503)."""

    kind = "not_ready"


class ServiceBusy(ServiceError):
    """The LLM stayed busy (429) through every retry."""

    kind = "busy"


class RequestRejected(ServiceError):
    """The service refused the request (4xx): unknown model, bad parameter, too long."""

    kind = "rejected"


class ContextTooLong(RequestRejected):
    """400 ``context_length_exceeded``: the LLM counted more tokens than the chat estimated.

    ``overflow`` is how many tokens too many the server counted (0 when it did not say).
    """

    kind = "context_too_long"

    def __init__(self, service: str, user_message: str, detail: str, overflow: int):
        super().__init__(service, user_message, detail)
        self.overflow = overflow


class BadResponse(ServiceError):
    """The service answered something that is not its documented format."""

    kind = "bad_response"


_LABEL = {"retriever": "The document search service", "llm": "The language model service"}


def _down(service: str, detail: str) -> ServiceDown:
    return ServiceDown(service, f"{_LABEL[service]} is not reachable right now. Please try again in a moment.", detail)


def _timeout(service: str, seconds: float, detail: str = "") -> ServiceTimeout:
    return ServiceTimeout(
        service, f"{_LABEL[service]} did not answer within {seconds:g} s. Please try again.", detail or "timeout"
    )


def _not_ready(service: str, detail: str) -> ModelNotReady:
    what = "search index" if service == "retriever" else "model"
    return ModelNotReady(
        service, f"{_LABEL[service]} is starting: its {what} is not ready yet. Please try again shortly.", detail
    )


def _error_detail(body: Any) -> str:
    """The message inside a JSON error body (KServe: ``{"error": ...}``, OpenAI: ``{"error": {"message": ...}}``)."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message") or err.get("detail")
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if err:
            return str(err)[:300]
    return ""


def _status_error(service: str, status: int, body: Any) -> ServiceError:
    detail = _error_detail(body)
    if status == 503:
        return _not_ready(service, detail or "503")
    if status == 429:
        return ServiceBusy(service, f"{_LABEL[service]} is busy. Please try again in a moment.", detail or "429")
    code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    if status == 400 and code == "context_length_exceeded":
        numbers = re.search(r"context length is (\d+) tokens.*?requested (\d+) tokens", detail)
        overflow = int(numbers.group(2)) - int(numbers.group(1)) if numbers else 0
        return ContextTooLong(
            service, "The conversation is too long for this model. Please start a new chat.", detail, max(overflow, 0)
        )
    if 400 <= status < 500:
        msg = f"{_LABEL[service]} refused the request ({status})" + (f": {detail}" if detail else ".")
        return RequestRejected(service, msg, detail or str(status))
    return ServiceError(service, f"{_LABEL[service]} failed ({status}). Please try again.", detail or str(status))


def _auth_headers(key: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key is not None else {}


# -- retriever --------------------------------------------------------------------------------------------------


class RetrieverClient:
    """The retriever predictor over KServe V1."""

    service = "retriever"

    def __init__(self, settings: ChatSettings, http: httpx.AsyncClient | None = None):
        self.settings = settings
        self.base_url = settings.base_url("retriever")
        self._http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.retriever_timeout_s, connect=settings.connect_timeout_s),
            headers=_auth_headers(settings.retriever_api_key),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def search(self, query: str, top_k: int) -> list[Passage]:
        """The ``top_k`` passages closest to ``query``, best first."""
        url = f"{self.base_url}/v1/models/{self.settings.retriever_model}:predict"
        started = time.perf_counter()
        try:
            resp = await self._http.post(url, json={"instances": [{"query": query, "top_k": top_k}]})
        except httpx.TimeoutException as exc:
            raise self._count(_timeout(self.service, self.settings.retriever_timeout_s, type(exc).__name__)) from exc
        except httpx.HTTPError as exc:
            raise self._count(_down(self.service, type(exc).__name__)) from exc
        finally:
            RETRIEVAL.observe(time.perf_counter() - started)
        body = _json_or_none(resp)
        if resp.status_code != 200:
            raise self._count(_status_error(self.service, resp.status_code, body))
        try:
            first = body["predictions"][0]  # type: ignore[index]
            # One entry per instance: the hit list itself, or {"query", "top_k", "hits": [...]}.
            hits = first["hits"] if isinstance(first, dict) else first
            passages = [Passage.model_validate(h) for h in hits]
        except (KeyError, IndexError, TypeError, ValidationError) as exc:
            raise self._count(
                BadResponse(self.service, "The document search service answered in an unexpected format.", str(exc)[:300])
            ) from exc
        log_event("retrieve", top_k=top_k, hits=len(passages), ms=round((time.perf_counter() - started) * 1000))
        return passages

    async def ready(self) -> bool:
        """Whether the retriever's model reports ready (KServe V1 model status)."""
        try:
            resp = await self._http.get(f"{self.base_url}/v1/models/{self.settings.retriever_model}")
        except httpx.HTTPError:
            return False
        body = _json_or_none(resp)
        return resp.status_code == 200 and bool(isinstance(body, dict) and body.get("ready", True))

    def _count(self, err: ServiceError) -> ServiceError:
        UPSTREAM_ERRORS.labels(self.service, err.kind).inc()
        log_event("upstream_error", service=self.service, kind=err.kind, detail=err.detail)
        return err


def _json_or_none(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


# -- LLM --------------------------------------------------------------------------------------------------------


class ModelInfo(BaseModel):
    """A model the LLM predictor serves, as ``/openai/v1/models`` lists it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    description: str = ""
    context_window: int | None = Field(None, description="Tokens the model reads, prompt and answer together.")
    quantization: str | None = None
    base_model: str | None = None
    loaded: bool | None = Field(None, description="Whether the predictor holds it in memory (else it loads on use).")
    tags: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation results, e.g. perplexity.")

    @classmethod
    def from_listing(cls, item: dict[str, Any]) -> "ModelInfo":
        """Accept the predictor's fields, also when nested under ``metadata``/``meta``."""
        merged: dict[str, Any] = {}
        for key in ("metadata", "meta", "ragtune"):
            if isinstance(item.get(key), dict):
                merged.update(item[key])
        merged.update({k: v for k, v in item.items() if v is not None})
        for key in ("context_window", "context_size", "context_length", "n_ctx", "max_model_len"):
            if isinstance(merged.get(key), int):
                merged["context_window"] = merged[key]
                break
        else:
            merged.pop("context_window", None)
        if not isinstance(merged.get("tags"), list):
            merged.pop("tags", None)
        if "loaded" in merged and not isinstance(merged["loaded"], bool):
            merged.pop("loaded")
        if not isinstance(merged.get("metrics"), dict):
            merged.pop("metrics", None)
        else:
            merged["metrics"] = {k: v for k, v in merged["metrics"].items() if isinstance(v, (int, float))}
        for key in ("description", "quantization", "base_model"):
            if key in merged and not isinstance(merged[key], str):
                merged.pop(key)
        return cls.model_validate(merged)

    def summary(self) -> str:
        """One line for the chat: name, description, window, quantization."""
        parts = [f"**{self.id}**"]
        if self.description:
            parts.append(self.description)
        facts = []
        if self.context_window:
            facts.append(f"context window {self.context_window} tokens")
        if self.quantization:
            facts.append(f"quantization {self.quantization}")
        if self.base_model:
            facts.append(f"fine-tuned from {self.base_model}")
        for name, value in list(self.metrics.items())[:2]:
            facts.append(f"{name} {value:g}")
        if self.loaded is False:
            facts.append("loads on first use")
        return " — ".join(parts) + (f" ({', '.join(facts)})" if facts else "")


OnBusy = Callable[[int, int, float], Awaitable[None]]
"""Called before each busy retry with (attempt, retries, delay_seconds)."""


class LLMClient:
    """The LLM predictor's OpenAI-compatible API."""

    service = "llm"

    def __init__(self, settings: ChatSettings, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.settings = settings
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else "unused"
        self._sdk = openai.AsyncOpenAI(
            base_url=f"{settings.base_url('llm')}/openai/v1",
            api_key=key,
            max_retries=0,  # retries are ours: bounded, visible in the chat, only for 429
            timeout=httpx.Timeout(settings.llm_timeout_s, connect=settings.connect_timeout_s),
        )
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._sdk.close()

    async def list_models(self) -> list[ModelInfo]:
        """The served models, with descriptions and context windows where the predictor reports them."""
        try:
            page = await self._sdk.models.list()
        except openai.APIError as exc:
            raise self._convert(exc) from exc
        except httpx.HTTPError as exc:
            raise self._count(_down(self.service, type(exc).__name__)) from exc
        models = []
        for item in page.data:
            try:
                models.append(ModelInfo.from_listing(item.model_dump()))
            except ValidationError:
                continue
        return models

    async def stream_chat(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: list[str],
        on_busy: OnBusy | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer's text as it streams; retry a 429 up to ``busy_retries`` times, waiting Retry-After."""
        retries = self.settings.busy_retries
        stream = None
        for attempt in range(retries + 1):
            try:
                stream = await self._sdk.chat.completions.create(
                    model=model,
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=top_p,
                    stop=stop or None,
                    stream=True,
                )
                break
            except openai.RateLimitError as exc:
                if attempt == retries:
                    raise self._count(
                        ServiceBusy(
                            self.service,
                            f"The language model is busy with other requests (still busy after {retries} "
                            f"retries). Please try again in a moment.",
                            "429",
                        )
                    ) from exc
                delay = self._retry_after(exc.response, attempt)
                BUSY_RETRIES.inc()
                log_event("llm_busy", model=model, attempt=attempt + 1, retries=retries, wait_s=round(delay, 2))
                if on_busy is not None:
                    await on_busy(attempt + 1, retries, delay)
                await self._sleep(delay)
            except openai.APIError as exc:
                raise self._convert(exc) from exc
            except httpx.HTTPError as exc:
                raise self._count(_down(self.service, type(exc).__name__)) from exc
        assert stream is not None
        try:
            async for chunk in stream:
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta is not None and delta.content:
                    yield delta.content
        except openai.APIError as exc:
            raise self._convert(exc) from exc
        except httpx.TimeoutException as exc:
            raise self._count(_timeout(self.service, self.settings.llm_timeout_s, type(exc).__name__)) from exc
        except httpx.HTTPError as exc:
            raise self._count(
                ServiceError(self.service, "The language model service stopped in the middle of the answer.", type(exc).__name__)
            ) from exc
        finally:
            await stream.close()

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        """Seconds to wait: the server's Retry-After (seconds form) or 0.5·2^attempt, capped by settings."""
        header = response.headers.get("retry-after", "")
        try:
            delay = float(header)
        except ValueError:
            delay = 0.5 * 2**attempt
        return min(max(delay, 0.05), self.settings.busy_max_wait_s)

    def _convert(self, exc: openai.APIError) -> ServiceError:
        if isinstance(exc, openai.APITimeoutError):
            return self._count(_timeout(self.service, self.settings.llm_timeout_s))
        if isinstance(exc, openai.APIConnectionError):
            return self._count(_down(self.service, type(exc).__name__))
        if isinstance(exc, openai.APIStatusError):
            body = _json_or_none(exc.response)
            err = _status_error(self.service, exc.status_code, body)
            if exc.status_code == 404 and isinstance(err, RequestRejected):
                err.user_message = (
                    "The chosen model is not served (any more). Pick another model in the chat settings."
                    + (f" ({err.detail})" if err.detail and err.detail != "404" else "")
                )
            return self._count(err)
        return self._count(
            ServiceError(self.service, "The language model service failed to answer. Please try again.", str(exc)[:300])
        )

    def _count(self, err: ServiceError) -> ServiceError:
        UPSTREAM_ERRORS.labels(self.service, err.kind).inc()
        log_event("upstream_error", service=self.service, kind=err.kind, detail=err.detail)
        return err
