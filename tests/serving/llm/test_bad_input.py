"""Every client mistake gets an OpenAI-style error JSON with the right status, never a 500 (real predictor)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.serving.llm.conftest import API_KEY, MODEL

AUTH = {"Authorization": f"Bearer {API_KEY}"}
USER = [{"role": "user", "content": "Hi"}]


def post(predictor, path: str, body=None, *, content: bytes | None = None, headers=AUTH) -> httpx.Response:
    return httpx.post(
        f"{predictor.url}{path}", json=body if content is None else None, content=content, headers=headers, timeout=60
    )


def assert_error(response: httpx.Response, status: int, type_: str, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == type_
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


CHAT_CASES = {
    "messages missing": ({"model": MODEL}, "messages"),
    "messages null": ({"model": MODEL, "messages": None}, "messages"),
    "messages a string": ({"model": MODEL, "messages": "Hi"}, "messages"),
    "messages empty": ({"model": MODEL, "messages": []}, "messages"),
    "entry not an object": ({"model": MODEL, "messages": ["Hi"]}, "messages[0]"),
    "entry a list": ({"model": MODEL, "messages": [USER[0], [1, 2]]}, "messages[1]"),
    "unknown role": ({"model": MODEL, "messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role"),
    "missing role": ({"model": MODEL, "messages": [{"content": "Hi"}]}, "messages[0].role"),
    "content a number": ({"model": MODEL, "messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    "content a list": (
        {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
        "messages[0].content",
    ),
    "content null": ({"model": MODEL, "messages": [{"role": "user", "content": None}]}, "messages[0].content"),
    "n > 1": ({"model": MODEL, "messages": USER, "n": 2}, "n"),
    "tools": ({"model": MODEL, "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    "tool_choice": ({"model": MODEL, "messages": USER, "tool_choice": "auto"}, "tool_choice"),
    "logprobs": ({"model": MODEL, "messages": USER, "logprobs": True}, "logprobs"),
    "top_logprobs": ({"model": MODEL, "messages": USER, "top_logprobs": 2}, "top_logprobs"),
    "logit_bias": ({"model": MODEL, "messages": USER, "logit_bias": {"1": 5}}, "logit_bias"),
    "response_format json": (
        {"model": MODEL, "messages": USER, "response_format": {"type": "json_object"}},
        "response_format",
    ),
    "unknown parameter": ({"model": MODEL, "messages": USER, "frobnicate": 1}, "frobnicate"),
    "max_tokens over the cap": ({"model": MODEL, "messages": USER, "max_tokens": 5000}, "max_tokens"),
    "max_tokens zero": ({"model": MODEL, "messages": USER, "max_tokens": 0}, "max_tokens"),
    "max_tokens a string": ({"model": MODEL, "messages": USER, "max_tokens": "10"}, "max_tokens"),
    "temperature too high": ({"model": MODEL, "messages": USER, "temperature": 5}, "temperature"),
    "top_p zero": ({"model": MODEL, "messages": USER, "top_p": 0}, "top_p"),
    "stop not strings": ({"model": MODEL, "messages": USER, "stop": [1]}, "stop"),
    "too many stops": ({"model": MODEL, "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    "seed a float": ({"model": MODEL, "messages": USER, "seed": 1.5}, "seed"),
    "stream a string": ({"model": MODEL, "messages": USER, "stream": "yes"}, "stream"),
    "stream_options without stream": (
        {"model": MODEL, "messages": USER, "stream_options": {"include_usage": True}},
        "stream_options",
    ),
    "model missing": ({"messages": USER}, "model"),
    "model a number": ({"model": 3, "messages": USER}, "model"),
}


@pytest.mark.parametrize("body,param", CHAT_CASES.values(), ids=CHAT_CASES.keys())
def test_chat_bad_input_is_400_naming_the_parameter(predictor, body, param):
    assert_error(post(predictor, "/openai/v1/chat/completions", body), 400, "invalid_request_error", param)


COMPLETION_CASES = {
    "prompt missing": ({"model": MODEL}, "prompt"),
    "prompt a number": ({"model": MODEL, "prompt": 5}, "prompt"),
    "prompt token ids": ({"model": MODEL, "prompt": [1, 2, 3]}, "prompt"),
    "prompt empty": ({"model": MODEL, "prompt": ""}, "prompt"),
    "echo": ({"model": MODEL, "prompt": "Hi", "echo": True}, "echo"),
    "best_of": ({"model": MODEL, "prompt": "Hi", "best_of": 3}, "best_of"),
    "suffix": ({"model": MODEL, "prompt": "Hi", "suffix": "end"}, "suffix"),
}


@pytest.mark.parametrize("body,param", COMPLETION_CASES.values(), ids=COMPLETION_CASES.keys())
def test_completion_bad_input_is_400_naming_the_parameter(predictor, body, param):
    assert_error(post(predictor, "/openai/v1/completions", body), 400, "invalid_request_error", param)


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"], ids=["broken", "empty", "array", "binary"])
def test_body_that_is_not_a_json_object_is_400(predictor, raw):
    response = post(
        predictor, "/openai/v1/chat/completions", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_request_error")


def test_unknown_model_is_404(predictor):
    response = post(predictor, "/openai/v1/chat/completions", {"model": "gpt-4o", "messages": USER})
    assert_error(response, 404, "invalid_request_error", "model", "model_not_found")


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/hostname", "models/x.gguf", "C:\\x.gguf", "~/.ssh/id_rsa"])
def test_path_like_model_name_is_rejected_without_opening_anything(predictor, gguf_path, name):
    before = httpx.get(f"{predictor.url}/openai/v1/models", headers=AUTH).json()["data"]
    response = post(predictor, "/openai/v1/chat/completions", {"model": name, "messages": USER})
    assert_error(response, 400, "invalid_request_error", "model")
    real = post(predictor, "/openai/v1/completions", {"model": str(gguf_path), "prompt": "Hi", "max_tokens": 1})
    assert_error(real, 400, "invalid_request_error", "model")  # even the path of a real GGUF
    assert httpx.get(f"{predictor.url}/openai/v1/models", headers=AUTH).json()["data"] == before


def test_prompt_beyond_the_context_is_400_with_both_numbers(predictor):
    long_text = "The quick brown fox jumps over the lazy dog. " * 180  # ~1800 tokens
    response = post(
        predictor,
        "/openai/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": long_text}], "max_tokens": 1000},
    )
    error = assert_error(response, 400, "invalid_request_error", "messages", "context_length_exceeded")
    numbers = [int(n) for n in re.findall(r"\d+", error["message"])]
    assert 2048 in numbers and 1000 in numbers
    prompt_tokens = numbers[numbers.index(1000) - 1]
    assert 1500 < prompt_tokens < 2048 and prompt_tokens + 1000 in numbers


def test_body_over_one_mib_is_413(predictor):
    big = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    assert_error(
        post(predictor, "/openai/v1/chat/completions", big), 413, "invalid_request_error", code="request_too_large"
    )


def test_chunked_body_over_one_mib_is_413(predictor):
    def chunks():
        for _ in range(20):
            yield b"x" * (100 * 1024)

    response = httpx.post(f"{predictor.url}/openai/v1/completions", content=chunks(), headers=AUTH, timeout=60)
    assert_error(response, 413, "invalid_request_error", code="request_too_large")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}],
    ids=["missing", "wrong", "no-scheme"],
)
def test_wrong_or_missing_api_key_is_401_on_inference_routes(predictor, headers):
    body = {"model": MODEL, "messages": USER, "max_tokens": 1}
    assert_error(post(predictor, "/openai/v1/chat/completions", body, headers=headers), 401, "authentication_error")
    response = httpx.get(f"{predictor.url}/openai/v1/models", headers=headers)
    assert_error(response, 401, "authentication_error")
    v1 = post(predictor, f"/v1/models/{MODEL}:predict", {"instances": ["Hi"]}, headers=headers)
    assert_error(v1, 401, "authentication_error")


def test_health_and_metrics_stay_open_without_a_key(predictor):
    for path in (
        "/",
        "/v2/health/live",
        "/v2/health/ready",
        f"/v1/models/{MODEL}",
        f"/v2/models/{MODEL}/ready",
        "/metrics",
    ):
        assert httpx.get(f"{predictor.url}{path}").status_code == 200, path
