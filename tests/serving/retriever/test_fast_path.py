"""The V1 fast path answers exactly as KServe's stack does: one server with it, one without, the same requests.

Both servers are real processes on free ports over the same index. Every request below goes to both; status, content
type and JSON body must match, and the fast-path counter on /metrics shows which server took the fast path.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.servers import running_module

pytestmark = pytest.mark.slow

V1 = "/v1/models/retriever:predict"
COUNTER = 'ragtune_retriever_fast_path_requests_total{model_name="retriever"}'

# (body, headers): good requests, client mistakes the model rejects, and requests the fast path leaves to KServe.
CASES = [
    ({"instances": [{"query": "sourdough starter", "top_k": 3}]}, {}),
    ({"instances": ["pod readiness", {"query": "vector search", "top_k": 2}]}, {}),
    ({"instances": [{"query": "lora adapters"}]}, {"content-type": "application/json; charset=utf-8"}),
    ({"instances": [{"query": "lora adapters"}]}, {"content-type": "application/x-www-form-urlencoded"}),
    ({"instances": [{"query": "lora adapters"}]}, {"content-type": "application/ld+json"}),
    ({"instances": [{"query": "", "top_k": 3}]}, {}),
    ({"instances": [{"query": 7}]}, {}),
    ({"instances": [{"query": "pods", "top_k": 0}]}, {}),
    ({"instances": [{"query": "pods", "top_k": 51}]}, {}),
    ({"instances": []}, {}),
    ({"queries": ["pods"]}, {}),
    (["pods"], {}),
    ({"instances": [{"query": "pods"}], "specversion": "1.0"}, {}),
    ({"instances": [{"query": "pods"}]}, {"ce-specversion": "1.0", "ce-source": "test", "ce-type": "query",
                                          "ce-id": "42"}),
]


@pytest.fixture(scope="module")
def plain_retriever(sample_index):
    """The retriever with the fast path off: KServe's stack serves every request."""
    with running_module("serving.retriever", "--index", str(sample_index), "--threads", "1", "--v1_fast_path", "false",
                        ready="/v2/models/retriever/ready") as server:
        yield server


def _counter(client: httpx.Client) -> float:
    match = re.search(re.escape(COUNTER) + r" ([0-9.e+]+)", client.get("/metrics").text)
    return float(match.group(1)) if match else 0.0


def _answer(client: httpx.Client, body, headers) -> tuple[int, str, object]:
    response = client.post(V1, content=json.dumps(body).encode(), headers=headers)
    return response.status_code, response.headers.get("content-type"), response.json()


@pytest.mark.parametrize("body, headers", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_fast_path_answers_like_kserve(retriever, plain_retriever, body, headers):
    with httpx.Client(base_url=retriever.url, timeout=30.0) as fast, \
            httpx.Client(base_url=plain_retriever.url, timeout=30.0) as plain:
        assert _answer(fast, body, headers) == _answer(plain, body, headers)


def test_fast_path_serves_plain_json_and_leaves_the_rest_to_kserve(retriever, plain_retriever):
    with httpx.Client(base_url=retriever.url, timeout=30.0) as fast, \
            httpx.Client(base_url=plain_retriever.url, timeout=30.0) as plain:
        before = _counter(fast)
        assert _answer(fast, {"instances": ["sourdough"]}, {})[0] == 200
        assert _counter(fast) == before + 1
        assert _answer(fast, {"instances": [{"query": 7}]}, {})[0] == 400  # an error the model raised: fast path
        assert _counter(fast) == before + 2
        cloud_event = {"instances": ["sourdough"], "specversion": "1.0", "id": "1", "source": "t", "type": "q",
                       "time": "2026-11-26T00:00:00Z", "data": {"instances": ["sourdough"]}}
        fast.post(V1, json=cloud_event)
        fast.post(V1, json={"instances": ["sourdough"]}, headers={"ce-specversion": "1.0", "ce-id": "1",
                                                                   "ce-source": "t", "ce-type": "q"})
        fast.post("/v2/models/retriever/infer", json={"inputs": [{"name": "query", "shape": [1], "datatype": "BYTES",
                                                                  "data": ["sourdough"]}]})
        assert _counter(fast) == before + 2  # CloudEvents and V2 went through KServe's stack
        plain.post(V1, json={"instances": ["sourdough"]})
        assert _counter(plain) == 0.0


def test_kserve_timing_lines_are_off_by_default(retriever):
    with httpx.Client(base_url=retriever.url, timeout=30.0) as client:
        assert client.post(V1, json={"instances": ["sourdough"]}).status_code == 200
    assert "kserve.trace" not in retriever.server.log()


@pytest.mark.parametrize("latency_logging", [False, True])
def test_kserve_timing_middleware_only_with_latency_logging(latency_logging):
    from fastapi import FastAPI
    from timing_asgi import TimingClient, TimingMiddleware

    from serving.retriever import middleware
    from serving.retriever.middleware import RequestGuard

    class Client(TimingClient):
        def timing(self, metric_name, timing, tags):
            pass

    app = FastAPI()
    middleware.install(app, max_body_bytes=1024, is_ready=lambda: True, model_name="retriever",
                       latency_logging=latency_logging)
    app.add_middleware(TimingMiddleware, client=Client())  # what KServe does when the server starts
    layer, classes = app.build_middleware_stack(), []
    while hasattr(layer, "app"):
        classes.append(type(layer))
        layer = layer.app
    assert RequestGuard in classes
    assert (TimingMiddleware in classes) is latency_logging
