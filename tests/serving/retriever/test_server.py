"""The retriever as a real server on a free port, called over HTTP with httpx and with KServe's REST client."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from tests.serving.retriever.conftest import CORPUS

# The session's server fixture builds a real index and loads torch + the embedding model: well over 20 s.
pytestmark = pytest.mark.slow

V1 = "/v1/models/retriever:predict"
V2 = "/v2/models/retriever/infer"


@pytest.fixture(scope="module")
def client(retriever):
    with httpx.Client(base_url=retriever.url, timeout=30.0) as c:
        yield c


def v2_body(queries, **extra):
    return {"inputs": [{"name": "query", "shape": [len(queries)], "datatype": "BYTES", "data": queries}], **extra}


# ---- readiness ---------------------------------------------------------------------------------------------------


def test_not_ready_while_loading_then_ready(retriever):
    seen = retriever.while_loading
    # The server answered liveness at once, and every readiness endpoint said 503 before it said 200.
    assert seen["/v2/health/live"][0] == 200
    for path in ("/v2/health/ready", "/v2/models/retriever/ready", "/v1/models/retriever"):
        assert seen[path][0] == 503, (path, seen[path])
        assert seen[path][-1] == 200, (path, seen[path])
        first_ready = seen[path].index(200)
        assert all(s == 200 for s in seen[path][first_ready:]), (path, seen[path])
    assert retriever.predict_while_loading == 503


def test_health_endpoints_after_load(client):
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/retriever/ready").json()["ready"] is True
    assert client.get("/v1/models/retriever").json() == {"name": "retriever", "ready": True}
    assert client.get("/v1/models").json() == {"models": ["retriever"]}


def test_kserve_client_reports_ready(retriever):
    async def check():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as c:
            return (
                await c.is_server_ready(retriever.url),
                await c.is_model_ready(retriever.url, "retriever"),
                await c.is_server_live(retriever.url),
            )

    assert asyncio.run(check()) == (True, True, True)


def test_metrics_count_queries(client):
    before = _metric(client.get("/metrics").text, 'ragtune_retriever_queries_total{model_name="retriever",protocol="v1"}')
    assert client.post(V1, json={"instances": ["sourdough starter", "pod readiness"]}).status_code == 200
    text = client.get("/metrics").text
    after = _metric(text, 'ragtune_retriever_queries_total{model_name="retriever",protocol="v1"}')
    assert after == before + 2
    assert f'ragtune_retriever_index_chunks{{model_name="retriever"}} {float(len(CORPUS))}' in text
    assert 'ragtune_retriever_ready{model_name="retriever"} 1.0' in text
    assert 'ragtune_retriever_stage_seconds_count{model_name="retriever",stage="encode"}' in text
    assert 'request_predict_seconds_count{model_name="retriever"}' in text


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


# ---- V1 ----------------------------------------------------------------------------------------------------------


def test_v1_returns_relevant_hits_with_metadata(client):
    response = client.post(
        V1,
        json={"instances": [
            {"query": "How does LoRA reduce training memory?", "top_k": 3},
            {"query": "how long to bake sourdough bread in a dutch oven", "top_k": 2},
            "what keeps traffic away from a pod that is not ready?",
        ]},
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [len(p["hits"]) for p in predictions] == [3, 2, 10 if len(CORPUS) >= 10 else len(CORPUS)]
    lora = predictions[0]["hits"][0]
    assert lora["source"] == "guides/lora.md" and lora["pages"] == [1] and lora["headings"] == ["Low-rank adaptation"]
    assert "LoRA fine-tunes" in lora["text"]
    assert set(lora) == {"rank", "chunk_id", "score", "text", "source", "pages", "headings", "chunk_index"}
    assert len(lora["chunk_id"]) == 32
    assert predictions[1]["hits"][0]["source"] == "recipes/bread.md"
    assert predictions[1]["hits"][0]["headings"] == ["Baking"]
    assert predictions[2]["hits"][0]["headings"] == ["Pods"]
    for p in predictions:
        scores = [h["score"] for h in p["hits"]]
        assert scores == sorted(scores, reverse=True)
        assert [h["rank"] for h in p["hits"]] == list(range(1, len(scores) + 1))
        assert all(-1.0 <= s <= 1.0001 for s in scores)


def test_v1_same_results_as_in_process_search(client, sample_index):
    """The server's hits (ONNX query encoder) equal sentence-transformers encode + search done here."""
    from components.index.embed import Embedder
    from components.index.search import load_index

    query = "approximate nearest neighbour graph"
    index = load_index(sample_index)
    expected = index.search(Embedder().encode([query]), 4)[0]
    hits = client.post(V1, json={"instances": [{"query": query, "top_k": 4}]}).json()["predictions"][0]["hits"]
    assert [h["chunk_id"] for h in hits] == [h.chunk_id for h in expected]
    assert np.allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-4)


def test_v1_with_kserve_rest_client(retriever):
    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0)) as c:
            return await c.infer(
                retriever.url, {"instances": [{"query": "cosine similarity of normalized vectors", "top_k": 1}]},
                model_name="retriever",
            )

    result = asyncio.run(call())
    (hit,) = result["predictions"][0]["hits"]
    assert hit["source"] == "guides/faiss.pdf" and hit["headings"] == ["Vector search"]


# ---- V2 ----------------------------------------------------------------------------------------------------------


def test_v2_json_with_top_k_parameter(client):
    response = client.post(V2, json=v2_body(["merge adapter into base model", "autoscaler replicas"],
                                             id="req-1", parameters={"top_k": 2}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-1" and body["model_name"] == "retriever"
    (output,) = body["outputs"]
    assert output["name"] == "hits" and output["datatype"] == "BYTES" and output["shape"] == [2]
    first, second = (json.loads(s) for s in output["data"])
    assert len(first) == 2 and len(second) == 2
    assert first[0]["headings"] == ["Merging adapters"]
    assert second[0]["headings"] == ["Autoscaling"] and second[0]["pages"] == [2]


def test_v2_top_k_input_per_query(client):
    body = v2_body(["pods", "bread"])
    body["inputs"].append({"name": "top_k", "shape": [2], "datatype": "INT32", "data": [1, 3]})
    data = client.post(V2, json=body).json()["outputs"][0]["data"]
    assert [len(json.loads(s)) for s in data] == [1, 3]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_v2_with_kserve_rest_client(retriever, binary):
    request_input = InferInput(name="query", shape=[2], datatype="BYTES")
    queries = ["wild yeast starter", "HNSW graph recall"]
    if binary:
        request_input.set_data_from_numpy(np.array([q.encode() for q in queries], dtype=np.object_), binary_data=True)
    else:
        request_input.data = queries
    request = InferRequest(model_name="retriever", infer_inputs=[request_input], parameters={"top_k": 1})

    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0)) as c:
            return await c.infer(retriever.url, request, model_name="retriever")

    response = asyncio.run(call())
    output = response.outputs[0]
    values = output.data if output.data is not None else list(output.as_numpy())
    hits = [json.loads(v.decode() if isinstance(v, bytes) else v) for v in values]
    assert hits[0][0]["headings"] == ["Sourdough"]
    assert hits[1][0]["headings"] == ["Approximate indexes"]


# ---- bad input: 400 naming the field, 413, 404; never 500 ---------------------------------------------------------

BAD_V1 = [
    ({"instances": [{"top_k": 3}]}, "instances[0].query"),
    ({"instances": [{"query": ""}]}, "instances[0].query"),
    ({"instances": [{"query": "  \n"}]}, "instances[0].query"),
    ({"instances": [{"query": 12}]}, "instances[0].query"),
    ({"instances": [{"query": None}]}, "instances[0].query"),
    ({"instances": [{"query": {"text": "x"}}]}, "instances[0].query"),
    ({"instances": [{"query": "ok", "top_k": 0}]}, "instances[0].top_k"),
    ({"instances": [{"query": "ok", "top_k": -3}]}, "instances[0].top_k"),
    ({"instances": [{"query": "ok", "top_k": 51}]}, "instances[0].top_k"),
    ({"instances": [{"query": "ok", "top_k": "ten"}]}, "instances[0].top_k"),
    ({"instances": [{"query": "ok"}, {"query": "ok", "top_k": 1000}]}, "instances[1].top_k"),
    ({"instances": []}, "instances"),
    ({"instances": "ok"}, "instances"),
    ({}, "instances"),
    ([1, 2], "body"),
]


@pytest.mark.parametrize("payload, field", BAD_V1, ids=[f for _, f in BAD_V1])
def test_v1_bad_input_is_400_naming_the_field(client, payload, field):
    response = client.post(V1, json=payload)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field
    assert field in body["error"]


BAD_V2 = [
    (v2_body([]), "inputs[0].data"),
    (v2_body([""]), "inputs[0].data[0]"),
    (v2_body(["ok", 3]), "inputs[0].data[1]"),
    (v2_body(["ok"], parameters={"top_k": 0}), "parameters.top_k"),
    (v2_body(["ok"], parameters={"top_k": 51}), "parameters.top_k"),
    ({"inputs": [{"name": "query", "shape": [1], "datatype": "FP32", "data": [1.0]}]}, "inputs[0].datatype"),
    ({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}, "inputs[0].name"),
    ({"inputs": []}, "inputs"),
    # Schema errors FastAPI would answer with 422:
    ({"queries": ["x"]}, "inputs"),
    ({"inputs": [{"name": "query", "datatype": "BYTES", "data": ["x"]}]}, "inputs[0].shape"),
]


@pytest.mark.parametrize("payload, field", BAD_V2, ids=[f for _, f in BAD_V2])
def test_v2_bad_input_is_400_naming_the_field(client, payload, field):
    response = client.post(V2, json=payload)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize("path", [V1, V2])
@pytest.mark.parametrize("raw", [b'{"instances": [', b"not json", b"", b'{"inputs": [}'], ids=["truncated", "text", "empty", "broken"])
def test_malformed_json_is_400_naming_body(client, path, raw):
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == "body" and "malformed JSON" in body["error"]


def test_non_json_content_type_is_400(client):
    response = client.post(V1, content=b"pods", headers={"content-type": "text/plain"})
    assert response.status_code == 400 and response.json()["field"] == "body"


@pytest.mark.parametrize("path, payload", [(V1, {"instances": ["sourdough"]}), (V2, v2_body(["sourdough"]))])
def test_json_sent_as_a_form_like_curl_does_is_served(client, path, payload):
    response = client.post(path, content=json.dumps(payload).encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text


def test_form_content_type_with_broken_json_is_400(client):
    response = client.post(V1, content=b"query=pods", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and response.json()["field"] == "body"


@pytest.mark.parametrize("path", [V1, V2])
def test_body_over_64_kib_is_413(client, path):
    big = {"instances": [{"query": "x" * (65 * 1024)}]}
    response = client.post(path, json=big)
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "body"


def test_chunked_body_over_64_kib_is_413(client):
    """Without a content-length the guard counts the streamed bytes."""

    def stream():
        yield b'{"instances": [{"query": "'
        for _ in range(70):
            yield b"y" * 1024
        yield b'"}]}'

    response = client.post(V1, content=stream(), headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text


def test_body_just_under_the_limit_is_served(client):
    # Valid JSON padded with whitespace to just under 64 KiB: the limit counts bytes, not queries.
    head = b'{"instances": [{"query": "sourdough starter", "top_k": 1}]'
    raw = head + b" " * (64 * 1024 - len(head) - 1) + b"}"
    assert len(raw) == 64 * 1024
    response = client.post(V1, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["hits"][0]["headings"] == ["Sourdough"]
    over = head + b" " * (64 * 1024 - len(head)) + b"}"
    assert client.post(V1, content=over, headers={"content-type": "application/json"}).status_code == 413


@pytest.mark.parametrize(
    "method, path",
    [("post", "/v1/models/nope:predict"), ("post", "/v2/models/nope/infer"), ("get", "/v1/models/nope"),
     ("get", "/v2/models/nope/ready")],
)
def test_unknown_model_is_404(client, method, path):
    kwargs = {"json": {"instances": ["x"]} if "v1" in path else v2_body(["x"])} if method == "post" else {}
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 404, response.text
    assert "nope" in response.json()["error"]


def test_kserve_client_sees_400_with_the_field(retriever):
    async def call():
        async with InferenceRESTClient(RESTConfig(protocol="v1", retries=0)) as c:
            await c.infer(retriever.url, {"instances": [{"query": "x", "top_k": 0}]}, model_name="retriever")

    with pytest.raises(httpx.HTTPStatusError) as err:
        asyncio.run(call())
    assert err.value.response.status_code == 400
    assert "instances[0].top_k" in str(err.value)


def test_server_log_is_structured_and_has_no_queries(retriever, client):
    assert client.post(V1, json={"instances": [{"query": "sourdough starter", "top_k": 0}]}).status_code == 400
    assert client.post(V1, json={"instances": ["sourdough starter"]}).status_code == 200
    log = retriever.server.log()
    events = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"')]
    names = {e["event"] for e in events}
    assert {"retriever_starting", "index_loading", "index_loaded", "request_rejected"} <= names
    loaded = next(e for e in events if e["event"] == "index_loaded")
    assert loaded["chunks"] == len(CORPUS) and loaded["dim"] == 384
    assert loaded["query_encoder"] == "OnnxEncoder"  # the default (auto) on a model the export reproduces
    assert "sourdough starter" not in log
