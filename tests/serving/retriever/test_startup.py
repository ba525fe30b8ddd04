"""Start-up failures: the retriever exits non-zero with a clear message instead of sitting not-ready."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.retriever.settings import SettingsError, load_settings
from tests.servers import REPO_ROOT, ServerProcess, free_port, python_module

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_retriever(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "serving.retriever", *args],
        cwd=REPO_ROOT, env={**os.environ, **OFFLINE}, capture_output=True, text=True, timeout=timeout,
    )


def test_missing_index_exits_2_before_serving(tmp_path):
    result = run_retriever("--index", str(tmp_path / "nowhere"), "--http_port", str(free_port()))
    assert result.returncode == 2
    assert f"--index (RAGTUNE_RETRIEVER_INDEX_DIR): index directory {tmp_path / 'nowhere'} does not exist" in result.stderr


def test_no_index_argument_returns_2_naming_the_flag(capsys, monkeypatch):
    from serving.retriever.__main__ import main

    monkeypatch.delenv("RAGTUNE_RETRIEVER_INDEX_DIR", raising=False)
    assert main(["--http_port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "--index (RAGTUNE_RETRIEVER_INDEX_DIR)" in err and "required" in err.lower()


@pytest.mark.parametrize(
    "args, flag",
    [(["--max_top_k", "0"], "--max_top_k"), (["--default_top_k", "60"], "default_top_k"),
     (["--max_body_bytes", "10"], "--max_body_bytes"), (["--model_name", "Bad Name"], "--model_name"),
     (["--threads", "0"], "--threads"), (["--workers", "2"], "--workers")],
)
def test_bad_settings_return_2_naming_the_field(sample_index, args, flag, capsys):
    """main() validates everything before it starts a server (checked in-process: no server comes up)."""
    from serving.retriever.__main__ import main

    assert main(["--index", str(sample_index), "--http_port", str(free_port()), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retriever: error: ") and flag in err


def test_unknown_query_encoder_from_the_environment_returns_2_naming_it(sample_index, monkeypatch, capsys):
    from serving.retriever.__main__ import main

    monkeypatch.setenv("RAGTUNE_RETRIEVER_QUERY_ENCODER", "tensorrt")
    assert main(["--index", str(sample_index), "--http_port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "--query_encoder (RAGTUNE_RETRIEVER_QUERY_ENCODER)" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", ["corrupt", "empty"])
def test_corrupt_or_empty_index_exits_3_with_message(kind, corrupt_index, tmp_path):
    """The server starts answering (not ready), the load fails, and the process ends with the reason."""
    directory = corrupt_index if kind == "corrupt" else tmp_path
    port = free_port()
    server = ServerProcess(python_module("serving.retriever", "--index", str(directory), "--http_port", str(port)),
                           port=port).start()
    try:
        code = server.proc.wait(timeout=120)
    finally:
        server.stop()
    log = server.log()
    assert code == 3, log[-3000:]
    expected = "sha256" if kind == "corrupt" else "holds no index"
    assert "retriever: error: cannot load the index in" in log and expected in log, log[-3000:]
    assert '"event": "index_load_failed"' in log


def test_settings_from_env_and_overrides(sample_index, monkeypatch):
    monkeypatch.setenv("RAGTUNE_RETRIEVER_INDEX_DIR", str(sample_index))
    monkeypatch.setenv("RAGTUNE_RETRIEVER_MAX_TOP_K", "20")
    settings = load_settings(default_top_k=None, threads=3)
    assert settings.index_dir == sample_index.resolve()
    assert (settings.max_top_k, settings.default_top_k, settings.threads) == (20, 10, 3)
    assert settings.model_name == "retriever" and settings.max_body_bytes == 65536
    monkeypatch.setenv("RAGTUNE_RETRIEVER_DEFAULT_TOP_K", "30")
    with pytest.raises(SettingsError, match="default_top_k"):
        load_settings()
