"""The `helm test` script (helm/ragtune/files/helm_test.py) fails with a reason when a predictor never answers.

Its passing path runs against the real retriever in tests/helm/test_read_only_root.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port

SCRIPT = Path(__file__).resolve().parent.parent.parent / "helm" / "ragtune" / "files" / "helm_test.py"


def _run(*args: str, timeout_s: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAGTUNE_TEST_TIMEOUT_S": timeout_s}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


def test_checks_fail_with_a_reason_when_nothing_answers():
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("ready", url, timeout_s="3")
    assert result.returncode == 1 and '"event": "not_ready"' in result.stdout
    retrieval = _run("retrieve", url, "anything", timeout_s="3")
    assert retrieval.returncode == 1
    usage = _run("bogus", timeout_s="3")
    assert usage.returncode == 2 and "usage" in usage.stdout
