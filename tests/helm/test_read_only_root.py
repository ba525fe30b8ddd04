"""Each service starts and serves with a read-only root filesystem and writable emptyDirs only where the chart mounts
them, as `readOnlyRootFilesystem: true` makes it in the cluster.

No container runtime here, so the same condition is made with Linux itself: each server runs in a private mount
namespace (`unshare -m`) where `/` is remounted read-only and fresh tmpfs mounts stand in for the chart's emptyDirs
(/tmp, the cache under $HOME, and Chainlit's .files). The servers are the real ones (real llama.cpp on the packaged
GGUF, the real retriever over a real index, real Chainlit), with the environment the chart gives them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.helm.chart_objects import by_kind, pod_specs, render
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
HELM_TEST_SCRIPT = ROOT / "helm" / "ragtune" / "files" / "helm_test.py"


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro /"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs root and mount namespaces (unshare -m)")


def _chart_env(component_prefix: str) -> tuple[dict[str, str], list[str]]:
    """Plain env values and emptyDir mount paths of the chart's container whose object name starts with the prefix."""
    for name, spec in pod_specs(render()):
        if name.startswith(component_prefix):
            container = spec["containers"][0]
            env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            volumes = {v["name"]: v for v in spec["volumes"]}
            writable = [m["mountPath"] for m in container["volumeMounts"] if "emptyDir" in volumes[m["name"]]]
            return env, writable
    raise AssertionError(f"no pod template {component_prefix}")


class ReadOnlyServer:
    """A command run with / read-only and tmpfs at ``writable`` (paths remapped under ``sandbox``)."""

    def __init__(self, argv: list[str], env: dict[str, str], writable: list[str], cwd: Path, sandbox: Path):
        self.sandbox = sandbox
        mounts = []
        for path in writable:
            target = Path(path)
            target.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount -t tmpfs -o size=256m tmpfs {shlex.quote(str(target))}")
        script = "\n".join([
            "set -e",
            # A per-mount flag in this private namespace only; the host's / stays writable.
            "mount -o remount,bind,ro /",
            *mounts,
            "if touch /ragtune-write-probe 2>/dev/null; then echo 'root is writable' >&2; exit 90; fi",
            f"cd {shlex.quote(str(cwd))}",
            "exec " + " ".join(shlex.quote(a) for a in argv),
        ])
        self.log = sandbox / "server.log"
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, url: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} under a read-only root:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{url} not ready after {timeout}s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)


def _moved(path: str, sandbox: Path) -> str:
    """A chart path (/home/ragtune/..., /tmp/...) moved under the sandbox; other values unchanged."""
    for prefix, target in (("/home/ragtune", sandbox / "home"), ("/tmp", sandbox / "tmp")):
        if path == prefix or path.startswith(prefix + "/"):
            return str(target) + path[len(prefix):]
    return path


def _base_env(chart_env: dict[str, str], sandbox: Path) -> dict[str, str]:
    """The chart's env with its fixed paths moved under the sandbox."""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": str(ROOT)}
    env.update({key: _moved(value, sandbox) for key, value in chart_env.items()})
    return env


def _writable(paths: list[str], sandbox: Path) -> list[str]:
    return [_moved(p, sandbox) for p in paths]


@pytest.mark.slow
def test_llm_predictor_serves_with_a_read_only_root(tmp_path):
    chart_env, writable = _chart_env("InferenceService/ragtune-llm")
    assert set(writable) == {"/tmp", "/home/ragtune/.cache"}
    env = _base_env({k: v for k, v in chart_env.items() if k not in ("STORAGE_URI",)}, tmp_path)
    env["RAGTUNE_LLM_N_THREADS"] = "2"
    port = free_port()
    server = ReadOnlyServer([sys.executable, "-m", "serving.llm", "--catalog", str(ROOT / "serving/llm/default_catalog.yaml"),
                             "--http_port", str(port)], env, _writable(writable, tmp_path), ROOT, tmp_path)
    try:
        server.wait(f"http://127.0.0.1:{port}/v2/health/ready")
        answer = httpx.post(f"http://127.0.0.1:{port}/openai/v1/chat/completions", timeout=120, json={
            "model": "smollm2-135m-instruct", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "Say hello."}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        server.stop()


@pytest.fixture(scope="module")
def read_only_retriever(tmp_path_factory, helm_sample_index):
    """The real retriever over a real index, under a read-only root, with the chart's env and emptyDirs."""
    sandbox = tmp_path_factory.mktemp("ro-retriever")
    chart_env, writable = _chart_env("InferenceService/ragtune-retriever")
    assert set(writable) == {"/tmp", "/home/ragtune/.cache"}
    env = _base_env({k: v for k, v in chart_env.items() if k != "STORAGE_URI"}, sandbox)
    port = free_port()
    # The chart passes --embedding_model (a Hub id); offline, the index's own recorded model is used instead.
    server = ReadOnlyServer([sys.executable, "-m", "serving.retriever", "--index", str(helm_sample_index),
                             "--http_port", str(port), "--threads", "2"], env, _writable(writable, sandbox), ROOT, sandbox)
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.mark.slow
def test_helm_test_checks_pass_against_the_real_retriever(read_only_retriever):
    """helm/ragtune/files/helm_test.py (what the `helm test` Pods run) waits for readiness, then one retrieval."""
    _, url = read_only_retriever
    env = {**os.environ, "RAGTUNE_TEST_TIMEOUT_S": "240"}
    ready = subprocess.run([sys.executable, str(HELM_TEST_SCRIPT), "ready", url], capture_output=True, text=True,
                           env=env, timeout=300)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    retrieved = subprocess.run([sys.executable, str(HELM_TEST_SCRIPT), "retrieve", url, "How does LoRA reduce memory?"],
                               capture_output=True, text=True, env=env, timeout=120)
    assert retrieved.returncode == 0, retrieved.stdout + retrieved.stderr
    assert '"passages": 1' in retrieved.stdout


@pytest.mark.slow
def test_retriever_serves_with_a_read_only_root(read_only_retriever):
    server, url = read_only_retriever
    server.wait(f"{url}/v2/health/ready")
    answer = httpx.post(f"{url}/v1/models/retriever:predict", timeout=60,
                        json={"instances": [{"query": "How do readiness probes work?", "top_k": 2}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"][0]["hits"][0]["source"] == "guides/kubernetes.html"


@pytest.mark.slow
def test_chat_serves_with_a_read_only_root(tmp_path):
    chart_env, writable = _chart_env("Deployment/ragtune-frontend")
    assert "/app/frontend/.files" in writable
    # The image's layout: the app under /app/frontend with .chainlit/ written at build time (docker/frontend.Dockerfile).
    app = tmp_path / "app"
    shutil.copytree(ROOT / "frontend", app / "frontend", ignore=shutil.ignore_patterns(".files", "translations", "__pycache__"))
    subprocess.run([sys.executable, "-c", "from chainlit.config import init_config; init_config(log=False)"],
                   cwd=app / "frontend", check=True, timeout=120, env={**os.environ, "CHAINLIT_APP_ROOT": str(app / "frontend")})
    prompt = yaml.safe_load(next(c for c in by_kind(render(), "ConfigMap") if "rag_prompt.yaml" in c["data"])["data"]["rag_prompt.yaml"])
    (tmp_path / "prompt").mkdir()
    (tmp_path / "prompt" / "rag_prompt.yaml").write_text(yaml.safe_dump(prompt))
    env = _base_env(chart_env, tmp_path)
    env.update({"PYTHONPATH": str(app), "RAGTUNE_CHAT_PROMPT_FILE": str(tmp_path / "prompt" / "rag_prompt.yaml"),
                "RAGTUNE_CHAT_RETRIEVER_URL": f"http://127.0.0.1:{free_port()}",
                "RAGTUNE_CHAT_LLM_URL": f"http://127.0.0.1:{free_port()}"})
    mounts = [str(app) + p[len("/app"):] if p.startswith("/app/") else _moved(p, tmp_path) for p in writable]
    port = free_port()
    server = ReadOnlyServer([sys.executable, "-m", "frontend", "--host", "127.0.0.1", "--port", str(port)],
                            env, mounts, app / "frontend", tmp_path)
    try:
        server.wait(f"http://127.0.0.1:{port}/health", timeout=120)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        server.stop()
