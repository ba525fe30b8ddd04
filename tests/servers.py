"""Start real servers for tests: a free port, a subprocess, a readiness wait, and a clean stop.

Used by the retriever, LLM and frontend tests. The process's output goes to a log file that is printed when it fails
to become ready, so a broken start shows its own error in the test report.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """A server started as a subprocess. ``url`` is its base URL."""

    args: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerProcess":
        fd, log = tempfile.mkstemp(prefix="ragtune-server-", suffix=".log")
        self.log_path = Path(log)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **self.env}
        self.proc = subprocess.Popen(
            self.args, cwd=REPO_ROOT, env=env, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True
        )
        os.close(fd)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def wait_ready(self, path: str, timeout: float = 120.0, status: int = 200) -> "ServerProcess":
        """Poll ``path`` until it answers ``status``; fail with the server's log if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before ready:\n{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + path, timeout=2.0).status_code == status:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready at {self.url}{path} after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=5)


@contextmanager
def running_module(module: str, *args: str, ready: str, timeout: float = 180.0) -> Iterator[ServerProcess]:
    """``python -m module --http_port PORT args...`` on a free port, ready at ``ready``; stopped on exit."""
    port = free_port()
    server = ServerProcess(python_module(module, "--http_port", str(port), *args), port=port).start()
    try:
        yield server.wait_ready(ready, timeout=timeout)
    finally:
        server.stop()


def python_module(module: str, *args: str) -> list[str]:
    """argv for ``python -m module args...`` with the test interpreter."""
    return [sys.executable, "-m", module, *args]
