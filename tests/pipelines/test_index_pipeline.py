"""The index pipeline: compiled to KFP IR YAML (parsed and checked), run end to end with kfp.local through the real
``ragtune index`` command, and the command's handling of bad flags (one line naming the flag, exit 2, no traceback).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT / "data" / "sample_corpus"
# the installed console script (pyproject [project.scripts]); `python -m pipelines.cli` would load cli.py twice
RAGTUNE = [str(Path(sys.executable).parent / "ragtune")]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(REPO_ROOT)}


def _ragtune(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*RAGTUNE, *args], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    from kfp import compiler

    from pipelines.index import index_pipeline

    path = tmp_path_factory.mktemp("compiled") / "index_pipeline.yaml"
    compiler.Compiler().compile(pipeline_func=index_pipeline, package_path=str(path))
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def test_compiled_yaml_has_the_four_components_in_order(compiled):
    spec = compiled["spec"]
    assert spec["pipelineInfo"]["name"] == "ragtune-index"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"load-documents", "chunk-documents", "embed-chunks", "store-embeddings"}
    assert tasks["chunk-documents"]["dependentTasks"] == ["load-documents"]
    assert tasks["embed-chunks"]["dependentTasks"] == ["chunk-documents"]
    assert tasks["store-embeddings"]["dependentTasks"] == ["embed-chunks"]
    assert tasks["store-embeddings"]["cachingOptions"] == {} or not tasks["store-embeddings"]["cachingOptions"].get(
        "enableCache", False)
    # artifacts flow between the steps
    assert tasks["embed-chunks"]["inputs"]["artifacts"]["chunks"]["taskOutputArtifact"] == {
        "outputArtifactKey": "chunks", "producerTask": "chunk-documents"}
    components = spec["components"]
    assert components["comp-load-documents"]["outputDefinitions"]["artifacts"]["documents"]["artifactType"][
        "schemaTitle"] == "system.Dataset"
    assert components["comp-store-embeddings"]["outputDefinitions"]["artifacts"]["index"]["artifactType"][
        "schemaTitle"] == "system.Artifact"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert len(images) == 1 and images.pop().split("/")[-1].startswith("ragtune-components:")


def test_compiled_yaml_parameters(compiled):
    params = compiled["spec"]["root"]["inputDefinitions"]["parameters"]
    assert params["sources"]["parameterType"] == "LIST"
    assert "defaultValue" not in params["sources"]
    expected = {
        "store": ("STRING", "local"), "store_dir": ("STRING", "/index/ragtune"), "ann": ("STRING", "flat"),
        "max_tokens": ("NUMBER_INTEGER", 256), "embedding_model": ("STRING", ""), "batch_size": ("NUMBER_INTEGER", 64),
        "layout_models": ("STRING", ""), "hopsworks_host": ("STRING", ""), "hopsworks_project": ("STRING", ""),
        "index_pvc": ("STRING", "ragtune-index"),
    }
    for name, (kind, default) in expected.items():
        assert params[name]["parameterType"] == kind, name
        assert params[name]["defaultValue"] == default, name
    store_inputs = compiled["spec"]["root"]["dag"]["tasks"]["store-embeddings"]["inputs"]["parameters"]
    assert store_inputs["store"]["componentInputParameter"] == "store"
    assert store_inputs["store_dir"]["componentInputParameter"] == "store_dir"


def test_compiled_yaml_mounts_the_index_volume_for_the_store_step(compiled):
    executors = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    (store,) = [e for name, e in executors.items() if "store-embeddings" in name]
    (pvc,) = store["pvcMount"]
    assert pvc["mountPath"] == "/index"
    assert pvc.get("taskOutputParameter") or pvc.get("componentInputParameter") == "index_pvc" or \
        pvc.get("pvcNameParameter", {}).get("componentInputParameter") == "index_pvc"
    (secret,) = store["secretAsEnv"]
    assert secret["keyToEnv"] == [{"envVar": "HOPSWORKS_API_KEY", "secretKey": "api-key"}]
    assert secret.get("optional") is True


@pytest.mark.slow
def test_ragtune_index_runs_the_pipeline_locally(tmp_path):
    """`ragtune index` runs index_pipeline through kfp.local; the directory it leaves loads and answers queries.
    (Re-index idempotence is asserted on the store itself in tests/components/index/test_index_store.py.)"""
    from components.index.embed import Embedder
    from components.index.search import load_index

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("standard_library_tour.md", "virtual_environments.html"):
        shutil.copy2(CORPUS / name, docs / name)
    (docs / "broken.pdf").write_bytes(b"not a pdf")
    out = tmp_path / "index"
    root = tmp_path / "runs"
    first = _ragtune("index", "--source", str(docs), "--out", str(out), "--max-tokens", "200",
                     "--pipeline-root", str(root))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    done = json.loads(next(line for line in first.stdout.splitlines() if line.startswith('{"event": "index_done"')))
    assert done["store"] == "local" and done["added"] == done["total"] > 10
    assert "docs/broken.pdf" in first.stdout + first.stderr  # reported by name and skipped
    # every step left its artifact under the pipeline root
    assert {p.name for p in root.rglob("*") if p.is_dir()} >= {"load-documents", "chunk-documents", "embed-chunks",
                                                                 "store-embeddings"}

    index = load_index(out)
    assert index.size == done["total"]
    hits = index.search(Embedder().encode(["How do I create a virtual environment?"]), 3)[0]
    assert hits[0].source == "docs/virtual_environments.html"



@pytest.mark.slow
def test_ragtune_index_fails_cleanly_when_nothing_is_readable(tmp_path):
    (tmp_path / "broken.pdf").write_bytes(b"not a pdf")
    result = _ragtune("index", "--source", str(tmp_path / "broken.pdf"), "--out", str(tmp_path / "idx"))
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ragtune index: error: the index pipeline failed")
    assert "load-documents" in last or "load_documents" in last
    assert not (tmp_path / "idx" / "CURRENT").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x"], "--source: is required"),
        (["--source", "data/sample_corpus"], "--out: is required"),
        (["--source", "data/sample_corpus", "--out", "x", "--max-tokens", "5"], "--max-tokens:"),
        (["--source", "data/sample_corpus", "--out", "x", "--max-tokens", "many"], "--max-tokens:"),
        (["--source", "data/sample_corpus", "--out", "x", "--ann", "lsh"], "--ann:"),
        (["--source", "data/sample_corpus", "--out", "x", "--store", "s3"], "--store:"),
        (["--source", "no/such/dir", "--out", "x"], "--source: none of no/such/dir exists"),
        (["--source", "data/sample_corpus", "--out", "README.md"], "--out:"),
        (["--source", "data/sample_corpus", "--out", "x", "--layout-models", "no/weights"], "--layout-models:"),
        (["--source", "data/sample_corpus", "--out", "x", "--store", "hopsworks"], "--store: hopsworks needs"),
    ],
)
def test_bad_flags_give_one_line_naming_the_flag(args, message, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.delenv("HOPSWORKS_API_KEY", raising=False)
    monkeypatch.chdir(REPO_ROOT)
    assert main(["index", *args]) == 2
    err = capsys.readouterr().err
    assert err.strip().startswith("ragtune index: error: " + message), err
    assert len(err.strip().splitlines()) == 1


def test_layout_models_without_weights_is_refused_before_the_run(tmp_path, monkeypatch, capsys):
    from pipelines.cli import main

    monkeypatch.chdir(REPO_ROOT)
    empty = tmp_path / "weights"
    empty.mkdir()
    assert main(["index", "--source", "data/sample_corpus", "--out", str(tmp_path / "idx"),
                 "--layout-models", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ragtune index: error: --layout-models: "), err
    assert "docling-project--docling-layout-heron" in err and "docling-tools models download-hf-repo" in err
    assert not (tmp_path / "idx").exists()


def test_the_installed_command_reports_a_bad_flag_without_a_traceback(tmp_path):
    result = _ragtune("index", "--source", str(tmp_path / "absent"), "--out", str(tmp_path / "idx"), timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"ragtune index: error: --source: none of {tmp_path / 'absent'} exists"
