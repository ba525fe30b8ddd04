"""Errors of the retriever predictor and the HTTP status each one maps to.

Every client mistake becomes a 4xx whose JSON body is ``{"error": "<message>", "field": "<field>"}``; the field
names the part of the request that was wrong (``instances[0].query``, ``inputs[0].data``, ``body``). KServe's own
exceptions keep KServe's mapping: ``ModelNotFound`` 404, ``ModelNotReady`` 503.

=====================  ======  ===============================================================
exception              status  when
=====================  ======  ===============================================================
InvalidRequest         400     a query missing, empty, not a string, or too long; a bad top_k;
                               a malformed JSON body; a body that is not the protocol's shape
PayloadTooLarge        413     the body is larger than ``max_body_bytes``
IndexLoadFailed        (exit)  the index is missing or corrupt at start-up: the process exits
=====================  ======  ===============================================================
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput
from starlette.requests import Request

from serving.retriever.events import log_event


class InvalidRequest(InvalidInput):
    """A client sent a request the retriever cannot answer; HTTP 400 naming ``field``."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PayloadTooLarge(Exception):
    """The request body is over the configured limit; HTTP 413."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, limit: int, size: int | None = None):
        got = f"{size} bytes" if size is not None else "more"
        super().__init__(f"body: request body is {got}, the limit is {limit} bytes")
        self.field = "body"
        self.limit = limit


class IndexLoadFailed(RuntimeError):
    """The index or the embedding model could not be loaded; the server exits non-zero."""


def error_body(field: str, message: str) -> dict[str, str]:
    """The JSON body every client error carries."""
    return {"error": f"{field}: {message}" if not message.startswith(f"{field}:") else message, "field": field}


def error_response(status: int, field: str, message: str) -> JSONResponse:
    """A JSON error response naming ``field``."""
    return JSONResponse(status_code=int(status), content=error_body(field, message))


async def invalid_request_handler(request: Request, exc: InvalidRequest) -> JSONResponse:
    """400 for :class:`InvalidRequest`, with the field it names."""
    log_event("request_rejected", status=400, path=request.url.path, field=exc.field, reason=exc.message)
    return error_response(exc.status, exc.field, exc.message)


async def request_validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 instead of FastAPI's 422 when a V2 body does not fit the inference-request schema.

    The field is built from the first error's location, without FastAPI's leading ``body`` segment:
    ``inputs[0].datatype``.
    """
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _format_loc(first.get("loc", ()))
    message = str(first.get("msg", "invalid request"))
    if first.get("type") == "json_invalid":
        field, message = "body", f"malformed JSON: {first.get('ctx', {}).get('error', message)}"
    log_event("request_rejected", status=400, path=request.url.path, field=field, reason=message)
    return error_response(HTTPStatus.BAD_REQUEST, field, message)


def _format_loc(loc: tuple | list) -> str:
    parts = list(loc)
    if parts and parts[0] == "body":
        parts = parts[1:]
    # FastAPI reports the union member it tried (InferenceRequest / bytes); that is noise to a client.
    parts = [p for p in parts if p not in ("InferenceRequest", "bytes")]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"
