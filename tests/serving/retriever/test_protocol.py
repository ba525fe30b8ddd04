"""Request validation of the retriever, V1 and V2, on KServe's real request objects (no server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from kserve import InferInput, InferRequest
from kserve.protocol.infer_type import InferResponse

from serving.retriever.errors import InvalidRequest
from serving.retriever.protocol import Limits, Query, parse_v1, parse_v2, v2_response

LIMITS = Limits(default_top_k=10, max_top_k=50, max_queries=4, max_query_chars=100)


def v2_request(*inputs: InferInput, parameters: dict | None = None) -> InferRequest:
    return InferRequest(model_name="retriever", infer_inputs=list(inputs), parameters=parameters)


def bytes_input(values, name="query", shape=None) -> InferInput:
    return InferInput(name=name, shape=shape or [len(values)], datatype="BYTES", data=values)


# ---- V1 -------------------------------------------------------------------------------------------------------


def test_v1_several_queries_with_and_without_top_k():
    queries = parse_v1({"instances": [{"query": "a", "top_k": 3}, {"query": "b"}, "c"]}, LIMITS)
    assert queries == [Query("a", 3), Query("b", 10), Query("c", 10)]


@pytest.mark.parametrize(
    "payload, field",
    [
        ([], "body"),
        ({}, "instances"),
        ({"instances": "q"}, "instances"),
        ({"instances": []}, "instances"),
        ({"instances": [{"query": "q"}] * 5}, "instances"),
        ({"instances": [{"top_k": 3}]}, "instances[0].query"),
        ({"instances": [{"query": ""}]}, "instances[0].query"),
        ({"instances": [{"query": "   "}]}, "instances[0].query"),
        ({"instances": [{"query": 42}]}, "instances[0].query"),
        ({"instances": [{"query": None}]}, "instances[0].query"),
        ({"instances": [{"query": ["q"]}]}, "instances[0].query"),
        ({"instances": [{"query": "x" * 101}]}, "instances[0].query"),
        ({"instances": [{"query": "ok"}, {"query": "q", "top_k": 0}]}, "instances[1].top_k"),
        ({"instances": [{"query": "q", "top_k": -1}]}, "instances[0].top_k"),
        ({"instances": [{"query": "q", "top_k": 51}]}, "instances[0].top_k"),
        ({"instances": [{"query": "q", "top_k": "5"}]}, "instances[0].top_k"),
        ({"instances": [{"query": "q", "top_k": 2.5}]}, "instances[0].top_k"),
        ({"instances": [{"query": "q", "top_k": True}]}, "instances[0].top_k"),
        ({"instances": [{"query": "q", "topk": 5}]}, "instances[0].topk"),
        ({"instances": [7]}, "instances[0]"),
        ({"instances": [{"query": "q"}], "inputs": []}, "inputs"),
    ],
)
def test_v1_bad_input_names_the_field(payload, field):
    with pytest.raises(InvalidRequest) as err:
        parse_v1(payload, LIMITS)
    assert err.value.field == field
    assert str(err.value).startswith(field)


def test_v1_top_k_at_the_limit_is_accepted():
    assert parse_v1({"instances": [{"query": "q", "top_k": 50}]}, LIMITS) == [Query("q", 50)]


# ---- V2 -------------------------------------------------------------------------------------------------------


def test_v2_bytes_input_with_top_k_parameter():
    queries = parse_v2(v2_request(bytes_input(["a", "b"]), parameters={"top_k": 4}), LIMITS)
    assert queries == [Query("a", 4), Query("b", 4)]


def test_v2_top_k_input_one_per_query():
    top_k = InferInput(name="top_k", shape=[2], datatype="INT32", data=[1, 7])
    assert parse_v2(v2_request(bytes_input(["a", "b"]), top_k), LIMITS) == [Query("a", 1), Query("b", 7)]


def test_v2_binary_tensor_input():
    """The binary tensor extension: KServe's client serializes the strings into raw bytes."""
    infer_input = InferInput(name="query", shape=[2], datatype="BYTES")
    infer_input.set_data_from_numpy(np.array([b"first", "second".encode()], dtype=np.object_), binary_data=True)
    raw, json_length = v2_request(infer_input).to_rest()
    decoded = InferRequest.from_bytes(raw, json_length, "retriever")
    assert parse_v2(decoded, LIMITS) == [Query("first", 10), Query("second", 10)]


@pytest.mark.parametrize(
    "request_, field",
    [
        (v2_request(), "inputs"),
        (v2_request(bytes_input(["a"], name="text")), "inputs[0].name"),
        (v2_request(InferInput(name="query", shape=[1], datatype="INT32", data=[1])), "inputs[0].datatype"),
        (v2_request(bytes_input([])), "inputs[0].data"),
        (v2_request(bytes_input([""])), "inputs[0].data[0]"),
        (v2_request(bytes_input(["ok", 5])), "inputs[0].data[1]"),
        (v2_request(bytes_input(["a", "b"], shape=[3])), "inputs[0].shape"),
        (v2_request(bytes_input(["q"] * 5)), "inputs[0].data"),
        (v2_request(bytes_input(["q"]), parameters={"top_k": 0}), "parameters.top_k"),
        (v2_request(bytes_input(["q"]), parameters={"top_k": 51}), "parameters.top_k"),
        (v2_request(bytes_input(["q"]), parameters={"top_k": "3"}), "parameters.top_k"),
        (
            v2_request(bytes_input(["q"]), InferInput(name="top_k", shape=[1], datatype="FP32", data=[1.0])),
            "inputs[1].datatype",
        ),
        (
            v2_request(bytes_input(["q"]), InferInput(name="top_k", shape=[1], datatype="INT64", data=[0])),
            "inputs[1].data[0]",
        ),
        (
            v2_request(bytes_input(["a", "b", "c"]), InferInput(name="top_k", shape=[2], datatype="INT64", data=[1, 2])),
            "inputs[1].data",
        ),
    ],
)
def test_v2_bad_input_names_the_field(request_, field):
    with pytest.raises(InvalidRequest) as err:
        parse_v2(request_, LIMITS)
    assert err.value.field == field


def test_v2_response_is_one_json_list_per_query():
    class Hit:
        def __init__(self, n):
            self.chunk_id, self.text, self.score, self.source = f"id{n}", f"text {n}", 1.0 / n, "doc.md"
            self.pages, self.headings, self.chunk_index = [n], ["Intro"], n

    request = v2_request(bytes_input(["a", "b"]))
    response = v2_response(request, "retriever", [Query("a", 2), Query("b", 1)], [[Hit(1), Hit(2)], [Hit(3)]])
    body, json_length = response.to_rest()
    assert json_length is None
    rebuilt = InferResponse.from_rest(body)
    hits = [json.loads(s) for s in rebuilt.outputs[0].data]
    assert [len(h) for h in hits] == [2, 1]
    assert hits[0][1] == {
        "rank": 2, "chunk_id": "id2", "score": 0.5, "text": "text 2", "source": "doc.md", "pages": [2],
        "headings": ["Intro"], "chunk_index": 2,
    }
