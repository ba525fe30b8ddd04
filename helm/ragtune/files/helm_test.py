"""`helm test` checks for the ragtune serving stack (run inside the frontend image: Python + httpx).

    python helm_test.py ready URL        wait until URL/v2/health/ready answers 200
    python helm_test.py retrieve URL Q   one V1 retrieval for question Q must return at least one passage

Exit 0 on success, 1 with a one-line reason otherwise. The API key, when the LLM requires one, comes from the
RAGTUNE_LLM_API_KEY environment variable (a secretKeyRef), never from the command line.
"""

import json
import os
import sys
import time

import httpx


def _headers() -> dict:
    key = os.environ.get("RAGTUNE_LLM_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def ready(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/v2/health/ready", timeout=5.0)
            if response.status_code == 200:
                print(json.dumps({"event": "ready", "url": url}))
                return 0
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(2.0)
    print(json.dumps({"event": "not_ready", "url": url, "last": last}))
    return 1


def retrieve(url: str, question: str, timeout_s: float) -> int:
    if ready(url, timeout_s):
        return 1
    body = {"instances": [{"query": question, "top_k": 1}]}
    response = httpx.post(f"{url}/v1/models/retriever:predict", json=body, headers=_headers(), timeout=30.0)
    if response.status_code != 200:
        print(json.dumps({"event": "retrieval_failed", "status": response.status_code, "body": response.text[:200]}))
        return 1
    predictions = response.json().get("predictions") or [{}]
    passages = predictions[0].get("hits") or []
    if not passages:
        print(json.dumps({"event": "retrieval_empty", "url": url}))
        return 1
    print(json.dumps({"event": "retrieved", "url": url, "passages": len(passages)}))
    return 0


def main(argv: list) -> int:
    timeout_s = float(os.environ.get("RAGTUNE_TEST_TIMEOUT_S", "300"))
    if len(argv) >= 2 and argv[0] == "ready":
        return ready(argv[1].rstrip("/"), timeout_s)
    if len(argv) >= 3 and argv[0] == "retrieve":
        return retrieve(argv[1].rstrip("/"), argv[2], timeout_s)
    print("usage: helm_test.py ready URL | retrieve URL QUESTION")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
