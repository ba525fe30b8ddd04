"""The OpenAI-compatible routes through the official ``openai`` client against a real predictor (real llama.cpp on
the packaged SmolLM2 GGUF)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.serving.llm.conftest import API_KEY, MODEL

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(predictor) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{predictor.url}/openai/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_models_lists_the_catalog_with_descriptions(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    extra = models[0].model_extra
    assert "SmolLM2" in extra["description"]
    assert extra["quantization"] == "q4_1" and extra["context_size"] == 2048
    assert extra["loaded"] is True  # preloaded


def test_factual_question_is_answered_with_paris(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, temperature=0, seed=7, max_tokens=24)
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_joined_stream_equals_non_stream_at_temperature_zero(client):
    kwargs = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name three colours."}], temperature=0, seed=3, max_tokens=40
    )
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    joined = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert whole and joined == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_same_seed_same_sample_at_nonzero_temperature(client):
    kwargs = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Tell me a story."}],
        temperature=1.0,
        seed=1234,
        max_tokens=20,
    )
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    second = client.chat.completions.create(**kwargs).choices[0].message.content
    assert first == second


def test_completions_stream_and_non_stream_agree_and_report_usage(client):
    kwargs = dict(model=MODEL, prompt="The three primary colours are", temperature=0, max_tokens=12)
    whole = client.completions.create(**kwargs)
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 12
    joined = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs))
    assert joined == whole.choices[0].text


def test_stream_is_sse_ending_in_done_with_usage_when_asked(predictor):
    body = {
        "model": MODEL,
        "messages": QUESTION,
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST",
        f"{predictor.url}/openai/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    usage_chunk = json.loads(lines[-2][len("data: ") :])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] <= 8


def test_stop_sequence_ends_the_text_before_it(client):
    base = dict(model=MODEL, prompt="Count: 1, 2, 3, 4,", temperature=0, max_tokens=16)
    free = client.completions.create(**base).choices[0].text
    assert "6" in free, free  # the premise: left alone, the model counts on past 6
    cut = client.completions.create(stop=["6"], **base)
    assert cut.choices[0].finish_reason == "stop"
    assert "6" not in cut.choices[0].text
    assert free.startswith(cut.choices[0].text)
