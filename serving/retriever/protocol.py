"""The retriever's request and response shapes for KServe V1 and V2, and their validation.

V1 (``POST /v1/models/retriever:predict``)::

    {"instances": [{"query": "What is LoRA?", "top_k": 5}, "a bare string is a query too"]}
    -> {"predictions": [{"query": "What is LoRA?", "top_k": 5, "hits": [{"rank": 1, "chunk_id": ..., "score": ...,
        "text": ..., "source": ..., "pages": [...], "headings": [...], "chunk_index": ...}, ...]}, ...]}

V2 (``POST /v2/models/retriever/infer``): a BYTES input ``query`` (one string per query), top_k from an optional
INT input ``top_k`` (one value, or one per query) or from the request parameter ``top_k``. The output ``hits`` is
BYTES with one element per query: the JSON list of that query's hits, as in V1.

Every validation failure raises :class:`~serving.retriever.errors.InvalidRequest` naming the field.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse

from serving.retriever.errors import InvalidRequest

QUERY_INPUT = "query"
TOP_K_INPUT = "top_k"
HITS_OUTPUT = "hits"
_INT_DATATYPES = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
_V1_INSTANCE_KEYS = {"query", "top_k"}


@dataclass(frozen=True)
class Limits:
    """The request limits the parser enforces (taken from the settings)."""

    default_top_k: int
    max_top_k: int
    max_queries: int
    max_query_chars: int


@dataclass(frozen=True)
class Query:
    """One validated query."""

    text: str
    top_k: int


def parse_v1(payload: Any, limits: Limits) -> list[Query]:
    """Validate a V1 ``{"instances": [...]}`` body into queries."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body", "must be a JSON object with an 'instances' list")
    unknown = sorted(set(payload) - {"instances"})
    if unknown:
        raise InvalidRequest(unknown[0], "unknown field; a V1 request has only 'instances'")
    if "instances" not in payload:
        raise InvalidRequest("instances", "is required: a list of {\"query\": ..., \"top_k\": ...} objects")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidRequest("instances", "must be a list")
    _check_count("instances", len(instances), limits)
    queries = []
    for i, instance in enumerate(instances):
        where = f"instances[{i}]"
        if isinstance(instance, str):
            queries.append(Query(_check_query(f"{where}", instance, limits), limits.default_top_k))
            continue
        if not isinstance(instance, dict):
            raise InvalidRequest(where, "must be an object with a 'query' string (or the query string itself)")
        extra = sorted(set(instance) - _V1_INSTANCE_KEYS)
        if extra:
            raise InvalidRequest(f"{where}.{extra[0]}", "unknown field; an instance has 'query' and optional 'top_k'")
        if "query" not in instance:
            raise InvalidRequest(f"{where}.query", "is required")
        text = _check_query(f"{where}.query", instance["query"], limits)
        top_k = _check_top_k(f"{where}.top_k", instance.get("top_k"), limits)
        queries.append(Query(text, top_k))
    return queries


def parse_v2(request: InferRequest, limits: Limits) -> list[Query]:
    """Validate a V2 inference request (BYTES input ``query``, optional ``top_k``) into queries."""
    query_at = top_k_at = None
    for i, infer_input in enumerate(request.inputs):
        if infer_input.name == QUERY_INPUT:
            query_at = i
        elif infer_input.name == TOP_K_INPUT:
            top_k_at = i
        else:
            raise InvalidRequest(
                f"inputs[{i}].name",
                f"unknown input {infer_input.name!r}; expected {QUERY_INPUT!r} (BYTES) and optional {TOP_K_INPUT!r} (INT)",
            )
    if query_at is None:
        raise InvalidRequest("inputs", f"needs an input named {QUERY_INPUT!r} with datatype BYTES")
    for i, requested in enumerate(request.request_outputs or []):
        if requested.name != HITS_OUTPUT:
            raise InvalidRequest(f"outputs[{i}].name", f"unknown output {requested.name!r}; the only one is {HITS_OUTPUT!r}")
    query_input = request.inputs[query_at]
    where = f"inputs[{query_at}]"
    if query_input.datatype != "BYTES":
        raise InvalidRequest(f"{where}.datatype", f"must be BYTES, got {query_input.datatype}")
    values = _input_values(query_input, where)
    _check_count(f"{where}.data", len(values), limits)
    texts = []
    for j, value in enumerate(values):
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(f"{where}.data[{j}]", "is not valid UTF-8") from None
        texts.append(_check_query(f"{where}.data[{j}]", value, limits))

    top_ks: list[int]
    if top_k_at is not None:
        k_where = f"inputs[{top_k_at}]"
        k_input = request.inputs[top_k_at]
        if k_input.datatype not in _INT_DATATYPES:
            raise InvalidRequest(f"{k_where}.datatype", f"must be an integer type (INT32, INT64, ...), got {k_input.datatype}")
        raw = _input_values(k_input, k_where)
        if len(raw) not in (1, len(texts)):
            raise InvalidRequest(f"{k_where}.data", f"needs 1 value or one per query ({len(texts)}), got {len(raw)}")
        checked = [_check_top_k(f"{k_where}.data[{j}]", _as_int(v), limits) for j, v in enumerate(raw)]
        top_ks = checked * len(texts) if len(checked) == 1 else checked
    else:
        params = _parameters_dict(request.parameters)
        top_ks = [_check_top_k("parameters.top_k", params.get("top_k"), limits)] * len(texts)
    return [Query(t, k) for t, k in zip(texts, top_ks)]


def hit_to_dict(rank: int, hit: Any) -> dict[str, Any]:
    """The JSON form of one search hit."""
    return {
        "rank": rank,
        "chunk_id": hit.chunk_id,
        "score": float(hit.score),
        "text": hit.text,
        "source": hit.source,
        "pages": [int(p) for p in (hit.pages or [])],
        "headings": list(hit.headings or []),
        "chunk_index": int(hit.chunk_index) if hit.chunk_index is not None else None,
    }


def v1_response(queries: Sequence[Query], results: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """``{"predictions": [...]}``, one entry per query in request order."""
    return {
        "predictions": [
            {"query": q.text, "top_k": q.top_k, "hits": [hit_to_dict(r, h) for r, h in enumerate(hits, start=1)]}
            for q, hits in zip(queries, results)
        ]
    }


def v2_response(
    request: InferRequest, model_name: str, queries: Sequence[Query], results: Sequence[Sequence[Any]]
) -> InferResponse:
    """A V2 response with the BYTES output ``hits``: per query, the JSON list of its hits."""
    encoded = [
        json.dumps([hit_to_dict(r, h) for r, h in enumerate(hits, start=1)], ensure_ascii=False)
        for hits in results
    ]
    output = InferOutput(name=HITS_OUTPUT, shape=[len(encoded)], datatype="BYTES", data=encoded)
    return InferResponse(
        response_id=request.id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=[output],
        use_binary_outputs=request.use_binary_outputs,
        requested_outputs=request.request_outputs,
    )


def _check_count(field: str, count: int, limits: Limits) -> None:
    if count == 0:
        raise InvalidRequest(field, "must hold at least one query")
    if count > limits.max_queries:
        raise InvalidRequest(field, f"holds {count} queries; at most {limits.max_queries} per request")


def _check_query(field: str, value: Any, limits: Limits) -> str:
    if value is None:
        raise InvalidRequest(field, "is required")
    if not isinstance(value, str):
        raise InvalidRequest(field, f"must be a string, got {_json_type(value)}")
    if not value.strip():
        raise InvalidRequest(field, "must not be empty")
    if len(value) > limits.max_query_chars:
        raise InvalidRequest(field, f"is {len(value)} characters; at most {limits.max_query_chars}")
    return value


def _check_top_k(field: str, value: Any, limits: Limits) -> int:
    if value is None:
        return limits.default_top_k
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(field, f"must be an integer, got {_json_type(value)}")
    if value <= 0:
        raise InvalidRequest(field, f"must be at least 1, got {value}")
    if value > limits.max_top_k:
        raise InvalidRequest(field, f"must be at most {limits.max_top_k}, got {value}")
    return value


def _as_int(value: Any) -> Any:
    # numpy integers from binary tensors are ints to the client; anything else stays as sent so the check names it.
    return int(value) if isinstance(value, np.integer) else value


def _input_values(infer_input: Any, where: str) -> list[Any]:
    """The input's elements as a flat list (JSON data or a binary tensor), checked against its shape."""
    if getattr(infer_input, "_raw_data", None) is not None:
        try:
            values = list(np.asarray(infer_input.as_numpy()).reshape(-1))
        except Exception as exc:  # a binary tensor that does not decode is the client's mistake
            raise InvalidRequest(f"{where}.data", f"binary data does not decode: {exc}") from None
    else:
        data = infer_input.data
        if data is None:
            raise InvalidRequest(f"{where}.data", "is required")
        values = list(_flatten(data if isinstance(data, (list, tuple)) else [data]))
    shape = list(infer_input.shape or [])
    if any((not isinstance(d, int)) or d < 0 for d in shape):
        raise InvalidRequest(f"{where}.shape", f"must be non-negative integers, got {shape}")
    expected = int(np.prod(shape)) if shape else len(values)
    if expected != len(values):
        raise InvalidRequest(f"{where}.shape", f"{shape} holds {expected} elements but data has {len(values)}")
    return values


def _flatten(items: Iterable[Any]) -> Iterable[Any]:
    for item in items:
        if isinstance(item, (list, tuple)):
            yield from _flatten(item)
        else:
            yield item


def _parameters_dict(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if isinstance(parameters, dict):
        return parameters
    if hasattr(parameters, "model_dump"):
        return parameters.model_dump(exclude_none=True)
    return dict(parameters)


def _json_type(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
