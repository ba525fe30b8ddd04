"""Validation of OpenAI chat/completions request bodies into one :class:`GenerationRequest`.

Checks are explicit so that each mistake gets its own message and ``param`` (``messages[2].role``, ``max_tokens``)
the way the OpenAI API reports them. Parameters this server does not implement are refused by name rather than
silently ignored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from serving.llm.catalog import MODEL_NAME_PATTERN
from serving.llm.errors import InvalidRequest, UnsupportedParameter

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP_SEQUENCES = 4
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)

# Accepted and ignored: they do not change what a single local model generates.
_IGNORED = {"user", "metadata", "store", "service_tier"}
_COMMON = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "logprobs",
    "logit_bias",
} | _IGNORED
_CHAT_FIELDS = _COMMON | {
    "messages",
    "max_completion_tokens",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "web_search_options",
}
_COMPLETION_FIELDS = _COMMON | {"prompt", "best_of", "echo", "suffix"}


@dataclass(frozen=True)
class GenerationRequest:
    """A validated request. ``None`` sampling values mean "use the catalog entry's default"."""

    kind: Literal["chat", "completion"]
    model: str
    messages: tuple[tuple[str, str], ...] = ()
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt_param(self) -> str:
        return "messages" if self.kind == "chat" else "prompt"


def parse_chat_request(body: Any, *, max_tokens_cap: int) -> GenerationRequest:
    """Validate a ``/chat/completions`` body; raise :class:`InvalidRequest` naming the bad parameter."""
    body = _object(body)
    _refuse_unknown(body, _CHAT_FIELDS)
    _refuse_unsupported(body)
    for name in ("top_logprobs", "audio", "prediction", "web_search_options", "reasoning_effort"):
        if body.get(name) is not None:
            raise UnsupportedParameter(f"{name} is not supported by this server", param=name)
    for name in ("tools", "functions"):
        if body.get(name):
            raise UnsupportedParameter(f"{name} (function calling) is not supported by this server", param=name)
    for name in ("tool_choice", "function_call", "parallel_tool_calls"):
        if body.get(name) not in (None, "none"):
            raise UnsupportedParameter(f"{name} (function calling) is not supported by this server", param=name)
    if body.get("modalities") not in (None, ["text"]):
        raise UnsupportedParameter("only text output is supported", param="modalities")
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise UnsupportedParameter(
            "response_format other than {'type': 'text'} is not supported", param="response_format"
        )
    max_tokens = _max_tokens(body, "max_tokens", max_tokens_cap)
    if body.get("max_completion_tokens") is not None:
        if max_tokens is not None:
            raise InvalidRequest("give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
        max_tokens = _max_tokens(body, "max_completion_tokens", max_tokens_cap)
    return GenerationRequest(
        kind="chat", model=_model(body), messages=_messages(body), max_tokens=max_tokens, **_sampling(body)
    )


def parse_completion_request(body: Any, *, max_tokens_cap: int) -> GenerationRequest:
    """Validate a ``/completions`` body; raise :class:`InvalidRequest` naming the bad parameter."""
    body = _object(body)
    _refuse_unknown(body, _COMPLETION_FIELDS)
    _refuse_unsupported(body)
    if body.get("best_of") not in (None, 1):
        raise UnsupportedParameter("best_of > 1 is not supported by this server", param="best_of")
    if body.get("echo") not in (None, False):
        raise UnsupportedParameter("echo is not supported by this server", param="echo")
    if body.get("suffix") not in (None, ""):
        raise UnsupportedParameter("suffix (insertion) is not supported by this server", param="suffix")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if "prompt" not in body or prompt is None:
        raise InvalidRequest("prompt is required", param="prompt", code="missing_required_parameter")
    if isinstance(prompt, list):
        raise UnsupportedParameter(
            "prompt must be one string; batches and token arrays are not supported", param="prompt"
        )
    if not isinstance(prompt, str):
        raise InvalidRequest(f"prompt must be a string, got {_kind(prompt)}", param="prompt", code="invalid_type")
    if not prompt:
        raise InvalidRequest("prompt must not be empty", param="prompt")
    return GenerationRequest(
        kind="completion",
        model=_model(body),
        prompt=prompt,
        max_tokens=_max_tokens(body, "max_tokens", max_tokens_cap),
        **_sampling(body),
    )


def validate_model_name(name: Any, param: str = "model") -> str:
    """A catalog-style name (letters, digits, '.', '_', '-'); anything path-like is refused before any lookup."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(
            f"{param} is required and must be a string", param=param, code="missing_required_parameter"
        )
    if not _MODEL_NAME_RE.match(name):
        raise InvalidRequest(
            f"{param} {name[:80]!r} is not a model name: use one of the names listed by GET /openai/v1/models "
            f"(pattern {MODEL_NAME_PATTERN}); paths are never accepted",
            param=param,
        )
    return name


# -- pieces -----------------------------------------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"the request body must be a JSON object, got {_kind(body)}", param=None, code="invalid_type"
        )
    return body


def _refuse_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise InvalidRequest(f"Unrecognized request argument supplied: {key}", param=key, code="unknown_parameter")


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("n") not in (None, 1):
        raise UnsupportedParameter("n > 1 is not supported: this server returns one choice", param="n")
    if body.get("logprobs") not in (None, False, 0):
        raise UnsupportedParameter("logprobs is not supported by this server", param="logprobs")
    if body.get("logit_bias"):
        raise UnsupportedParameter("logit_bias is not supported by this server", param="logit_bias")


def _model(body: dict[str, Any]) -> str:
    if "model" not in body or body["model"] is None:
        raise InvalidRequest("model is required", param="model", code="missing_required_parameter")
    return validate_model_name(body["model"])


def _messages(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if "messages" not in body or body["messages"] is None:
        raise InvalidRequest("messages is required", param="messages", code="missing_required_parameter")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise InvalidRequest(
            f"messages must be a list of message objects, got {_kind(messages)}", param="messages", code="invalid_type"
        )
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(
                f"{where} must be an object with role and content, got {_kind(message)}",
                param=where,
                code="invalid_type",
            )
        role = message.get("role")
        if role not in ROLES:
            shown = role if isinstance(role, str) else _kind(role)
            raise InvalidRequest(f"{where}.role {shown!r} is not one of {', '.join(ROLES)}", param=f"{where}.role")
        for key in message:
            if key not in ("role", "content", "name"):
                raise UnsupportedParameter(f"{where}.{key} is not supported by this server", param=f"{where}.{key}")
        if "content" not in message:
            raise InvalidRequest(
                f"{where}.content is required", param=f"{where}.content", code="missing_required_parameter"
            )
        content = message["content"]
        if not isinstance(content, str):
            raise InvalidRequest(
                f"{where}.content must be a string, got {_kind(content)}", param=f"{where}.content", code="invalid_type"
            )
        out.append(("system" if role == "developer" else role, content))
    return tuple(out)


def _max_tokens(body: dict[str, Any], name: str, cap: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise InvalidRequest(f"{name} must be an integer, got {_kind(value)}", param=name, code="invalid_type")
    if value < 1:
        raise InvalidRequest(f"{name} must be at least 1, got {value}", param=name)
    if value > cap:
        raise InvalidRequest(f"{name} is {value}, above this server's cap of {cap}", param=name)
    return value


def _sampling(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "temperature": _number(body, "temperature", 0.0, 2.0),
        "top_p": _number(body, "top_p", 0.0, 1.0, low_open=True),
        "presence_penalty": _number(body, "presence_penalty", -2.0, 2.0) or 0.0,
        "frequency_penalty": _number(body, "frequency_penalty", -2.0, 2.0) or 0.0,
        "stop": _stop(body.get("stop")),
    }
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise InvalidRequest(f"seed must be an integer, got {_kind(seed)}", param="seed", code="invalid_type")
    out["seed"] = None if seed is None else int(seed) & 0xFFFFFFFF
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest(f"stream must be a boolean, got {_kind(stream)}", param="stream", code="invalid_type")
    out["stream"] = stream
    options = body.get("stream_options")
    out["include_usage"] = False
    if options is not None:
        if not stream:
            raise InvalidRequest("stream_options is only allowed with stream: true", param="stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise InvalidRequest("stream_options may only hold include_usage", param="stream_options")
        include = options.get("include_usage", False)
        if not isinstance(include, bool):
            raise InvalidRequest("stream_options.include_usage must be a boolean", param="stream_options.include_usage")
        out["include_usage"] = include
    return out


def _number(body: dict[str, Any], name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number, got {_kind(value)}", param=name, code="invalid_type")
    if value > high or value < low or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise InvalidRequest(f"{name} must be in {bound}, got {value}", param=name)
    return float(value)


def _stop(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise InvalidRequest(
            "stop must be a non-empty string or a list of non-empty strings", param="stop", code="invalid_type"
        )
    if len(value) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop may hold at most {MAX_STOP_SEQUENCES} sequences, got {len(value)}", param="stop")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
