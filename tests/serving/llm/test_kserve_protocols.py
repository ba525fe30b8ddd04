"""KServe V1 ``:predict`` and V2 ``/infer`` on the same process as the OpenAI routes, plus health and metrics."""

from __future__ import annotations

import httpx

from tests.serving.llm.conftest import API_KEY, MODEL
from tests.serving.llm.test_bad_input import assert_error

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def test_v1_predict_chat_completion_and_bare_string(predictor):
    body = {
        "instances": [
            {
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 24,
                "temperature": 0,
            },
            {"prompt": "One, two, three,", "max_tokens": 4, "temperature": 0},
            "Say hello.",
        ]
    }
    response = httpx.post(f"{predictor.url}/v1/models/{MODEL}:predict", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    assert "Paris" in predictions[0]["text"]
    assert predictions[1]["finish_reason"] == "length" and predictions[1]["usage"]["completion_tokens"] == 4
    assert predictions[2]["text"]


def test_v2_infer_returns_text_output_tensors(predictor):
    body = {
        "inputs": [
            {
                "name": "text_input",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["What is the capital of France?", "Name a colour."],
            }
        ],
        "parameters": {"max_tokens": 24, "temperature": 0},
    }
    response = httpx.post(f"{predictor.url}/v2/models/{MODEL}/infer", json=body, headers=AUTH, timeout=120)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["text_output"]["shape"] == [2]
    assert "Paris" in outputs["text_output"]["data"][0]
    assert outputs["finish_reason"]["data"][1] in ("stop", "length")
    assert 0 < outputs["completion_tokens"]["data"][0] <= 24


def test_v2_raw_prompt_parameter(predictor):
    body = {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["One, two, three,"]}],
        "parameters": {"max_tokens": 3, "temperature": 0, "raw_prompt": True},
    }
    response = httpx.post(f"{predictor.url}/v2/models/{MODEL}/infer", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert outputs["completion_tokens"]["data"] == [3]


def test_v1_and_v2_bad_input_are_400_json(predictor):
    url = predictor.url
    assert_error(
        httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": []}, headers=AUTH),
        400,
        "invalid_request_error",
        "instances",
    )
    assert_error(
        httpx.post(f"{url}/v1/models/{MODEL}:predict", json={"instances": [{"messages": "Hi"}]}, headers=AUTH),
        400,
        "invalid_request_error",
        "instances[0].messages",
    )
    assert_error(
        httpx.post(
            f"{url}/v1/models/{MODEL}:predict",
            json={"instances": [{"prompt": "Hi", "max_tokens": 99999}]},
            headers=AUTH,
        ),
        400,
        "invalid_request_error",
        "instances[0].max_tokens",
    )
    wrong_name = {"inputs": [{"name": "prompt", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}]}
    assert_error(
        httpx.post(f"{url}/v2/models/{MODEL}/infer", json=wrong_name, headers=AUTH),
        400,
        "invalid_request_error",
        "inputs",
    )
    bad_param = {
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}],
        "parameters": {"n": 2},
    }
    assert_error(
        httpx.post(f"{url}/v2/models/{MODEL}/infer", json=bad_param, headers=AUTH),
        400,
        "invalid_request_error",
        "parameters.n",
    )


def test_unknown_model_on_kserve_routes_is_404(predictor):
    response = httpx.post(f"{predictor.url}/v1/models/nope:predict", json={"instances": ["Hi"]}, headers=AUTH)
    assert response.status_code == 404
    response = httpx.post(
        f"{predictor.url}/v2/models/nope/infer",
        headers=AUTH,
        json={"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}]},
    )
    assert response.status_code == 404


def test_health_readiness_and_model_metadata(predictor):
    url = predictor.url
    assert httpx.get(f"{url}/").json() == {"status": "alive"}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{url}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    assert httpx.get(f"{url}/v2/models/{MODEL}/ready").status_code == 200
    assert MODEL in httpx.get(f"{url}/v1/models").json()["models"]


def test_metrics_report_requests_tokens_ttft_rate_and_queue(predictor):
    httpx.post(
        f"{predictor.url}/openai/v1/completions",
        headers=AUTH,
        timeout=60,
        json={"model": MODEL, "prompt": "Hello", "max_tokens": 5, "temperature": 0},
    )
    text = httpx.get(f"{predictor.url}/metrics").text
    for name in (
        "ragtune_llm_requests_total",
        "ragtune_llm_generated_tokens_total",
        "ragtune_llm_time_to_first_token_seconds_bucket",
        "ragtune_llm_tokens_per_second_bucket",
        "ragtune_llm_queue_depth",
        "ragtune_llm_prompt_tokens_total",
        "ragtune_llm_loaded_models",
    ):
        assert name in text, name
    assert f'ragtune_llm_requests_total{{endpoint="completions",model="{MODEL}",status="200"}}' in text
    generated = [
        line for line in text.splitlines() if line.startswith(f'ragtune_llm_generated_tokens_total{{model="{MODEL}"}}')
    ]
    assert generated and float(generated[0].split()[-1]) >= 5
