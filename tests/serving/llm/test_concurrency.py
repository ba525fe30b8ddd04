"""Queueing, 429 past the queue, and cancellation on disconnect, against a real predictor (queue of 8)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.serving.llm.conftest import API_KEY, MODEL

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def _stream_one(client: httpx.AsyncClient, url: str, i: int) -> dict:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Write a poem about the number {i}."}],
        "max_tokens": 24,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
    }
    async with client.stream("POST", f"{url}/openai/v1/chat/completions", json=body, headers=AUTH) as response:
        raw = (await response.aread()).decode()
        return {"status": response.status_code, "headers": dict(response.headers), "body": raw}


def test_twelve_streaming_clients_against_a_queue_of_eight(predictor):
    async def run() -> list[dict]:
        async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=20)) as client:
            return await asyncio.gather(*(_stream_one(client, predictor.url, i) for i in range(12)))

    results = asyncio.run(run())
    statuses = sorted(r["status"] for r in results)
    assert set(statuses) <= {200, 429}, statuses
    rejected = [r for r in results if r["status"] == 429]
    accepted = [r for r in results if r["status"] == 200]
    assert rejected, "some clients must be turned away past the queue"
    assert len(accepted) >= 9  # one generating + eight waiting
    for r in rejected:
        assert int(r["headers"]["retry-after"]) >= 1
        assert json.loads(r["body"])["error"]["type"] == "rate_limit_error"
    for r in accepted:
        events = [line for line in r["body"].splitlines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        text = "".join(
            json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
            for e in events[1:-1]
            if json.loads(e[6:])["choices"]
        )
        assert text.strip()
    # healthy afterwards, nothing left waiting, and the next request is served
    assert httpx.get(f"{predictor.url}/v2/health/ready").status_code == 200
    assert metric(predictor.url, "ragtune_llm_queue_depth") == 0
    after = httpx.post(
        f"{predictor.url}/openai/v1/completions",
        headers=AUTH,
        timeout=60,
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 2},
    )
    assert after.status_code == 200


def test_disconnect_mid_stream_frees_the_model_promptly(predictor):
    cancelled_before = metric(predictor.url, "ragtune_llm_generations_total", model=MODEL, finish_reason="cancelled")
    cancels_before = metric(predictor.url, "ragtune_llm_cancel_seconds_count")
    cancel_seconds_before = metric(predictor.url, "ragtune_llm_cancel_seconds_sum")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "max_tokens": 2000,
        "temperature": 0.8,
        "seed": 5,
        "stream": True,
    }
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", f"{predictor.url}/openai/v1/chat/completions", json=body, headers=AUTH) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            received = 0
            for line in lines:
                if line.startswith("data: "):
                    received += 1
                if received >= 5:
                    break
        # leaving the block closes the connection mid-stream
    closed = time.monotonic()
    nxt = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}
    first_token_at = None
    with httpx.stream("POST", f"{predictor.url}/openai/v1/chat/completions", json=nxt, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():  # read to the end: leaving early would cancel this one too
            if first_token_at is None and '"content":"' in line and '"content":""' not in line:
                first_token_at = time.monotonic()
    assert first_token_at is not None
    # the server measures disconnect -> model free; the bound is 1 s
    assert metric(predictor.url, "ragtune_llm_cancel_seconds_count") == cancels_before + 1
    freed_in = metric(predictor.url, "ragtune_llm_cancel_seconds_sum") - cancel_seconds_before
    assert freed_in < 1.0, freed_in
    # had the abandoned 2000-token generation kept the model, the next first token would be tens of seconds away
    assert first_token_at - closed < 2.0, first_token_at - closed
    cancelled_after = metric(predictor.url, "ragtune_llm_generations_total", model=MODEL, finish_reason="cancelled")
    assert cancelled_after == cancelled_before + 1


def test_client_giving_up_on_a_non_streaming_request_cancels_it(predictor):
    cancelled_before = metric(predictor.url, "ragtune_llm_generations_total", model=MODEL, finish_reason="cancelled")
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long essay about mountains."}],
        "max_tokens": 2000,
        "temperature": 0.8,
        "seed": 9,
    }
    try:
        httpx.post(f"{predictor.url}/openai/v1/chat/completions", json=body, headers=AUTH, timeout=1.5)
    except httpx.TimeoutException:
        pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = metric(predictor.url, "ragtune_llm_generations_total", model=MODEL, finish_reason="cancelled")
        if after == cancelled_before + 1:
            break
        time.sleep(0.1)
    assert after == cancelled_before + 1
    assert metric(predictor.url, "ragtune_llm_active_generations") == 0
