"""The `helm test` checks (helm/ragtune/files/helm_test.py) against a real retriever predictor on a free port.

In the cluster the script runs in the frontend image against each InferenceService's URL; here it runs with the
test interpreter against `python -m serving.retriever` serving a real index (real embedder, real FAISS), so the
readiness and retrieval requests it sends are the ones the predictor really accepts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ServerProcess, free_port, python_module

SCRIPT = Path(__file__).resolve().parent.parent.parent / "helm" / "ragtune" / "files" / "helm_test.py"


def _run(*args: str, timeout_s: str = "120") -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGTUNE_TEST_TIMEOUT_S": timeout_s}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=200)


@pytest.fixture(scope="module")
def retriever_url(tmp_path_factory):
    from tests.serving.retriever.conftest import build_index

    index = tmp_path_factory.mktemp("helm-test-index")
    build_index(index)
    port = free_port()
    server = ServerProcess(python_module("serving.retriever", "--index", str(index), "--http_port", str(port),
                                         "--threads", "2"), port=port).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.mark.slow
def test_ready_and_one_retrieval_pass_against_the_real_retriever(retriever_url):
    # No wait_ready first: the script itself must wait while the index loads.
    ready = _run("ready", retriever_url)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert '"event": "ready"' in ready.stdout
    retrieved = _run("retrieve", retriever_url, "How does LoRA reduce training memory?")
    assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr
    assert '"passages": 1' in retrieved.stdout


def test_checks_fail_with_a_reason_when_nothing_answers():
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("ready", url, timeout_s="3")
    assert result.returncode == 1 and '"event": "not_ready"' in result.stdout
    usage = _run("bogus")
    assert usage.returncode == 2 and "usage" in usage.stdout
