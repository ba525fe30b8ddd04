"""The pipeline steps as plain functions over artifact folders: each writes a manifest and verifies its input's."""

from __future__ import annotations

import json

import pytest

from components.index import steps
from components.index.search import load_index
from components.manifest import ManifestError, verify_manifest
from tests.components.index.conftest import HTML, MARKDOWN


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """load -> chunk -> embed -> store over the Markdown and HTML samples, each into its own folder."""
    root = tmp_path_factory.mktemp("steps")
    out = {name: root / name for name in ("documents", "chunks", "embeddings", "index")}
    out["load"] = steps.run_load([str(MARKDOWN), str(HTML), str(root / "absent.pdf")], out["documents"], progress=False)
    out["chunk"] = steps.run_chunk(out["documents"], out["chunks"], max_tokens=128, progress=False)
    out["embed"] = steps.run_embed(out["chunks"], out["embeddings"], progress=False)
    out["store"] = steps.run_store(out["embeddings"], store_dir=out["index"], ann="hnsw")
    return out


def test_each_step_leaves_a_verified_artifact(artifacts):
    assert artifacts["load"]["documents"] == 2
    assert artifacts["load"]["skipped"] == [{"source": str(artifacts["documents"].parent / "absent.pdf"),
                                             "reason": "no such file or folder"}]
    assert verify_manifest(artifacts["documents"], kind="documents")["meta"] == {"documents": 2, "skipped": 1}
    listing = json.loads((artifacts["documents"] / "documents.json").read_text())
    assert {d["source"] for d in listing} == {"sample_corpus/standard_library_tour.md",
                                              "sample_corpus/virtual_environments.html"}
    assert verify_manifest(artifacts["chunks"], kind="chunks")["meta"]["chunks"] == artifacts["chunk"]["chunks"]
    meta = verify_manifest(artifacts["embeddings"], kind="embeddings")["meta"]
    assert meta["dim"] == 384 and meta["embedding_model"].endswith("model")
    stats = artifacts["store"]["stats"]
    assert stats["added"] == stats["total"] == artifacts["chunk"]["chunks"]
    index = load_index(artifacts["index"])
    assert index.kind == "hnsw" and index.size == stats["total"]


def test_read_back_matches_what_was_written(artifacts):
    chunks = steps.read_chunks(artifacts["chunks"])
    embedded, vectors, _ = steps.read_embeddings(artifacts["embeddings"])
    assert embedded == chunks
    assert vectors.shape == (len(chunks), 384)
    docs = steps.read_documents(artifacts["documents"])
    assert {source for _, source, _ in docs} == {c.source for c in chunks}


def test_a_tampered_input_stops_the_next_step(artifacts, tmp_path):
    import shutil

    bad = tmp_path / "chunks"
    shutil.copytree(artifacts["chunks"], bad)
    with open(bad / "chunks.parquet", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ManifestError, match="chunks.parquet has size"):
        steps.run_embed(bad, tmp_path / "embeddings", progress=False)
    with pytest.raises(ManifestError, match="holds a 'chunks' artifact, expected 'embeddings'"):
        steps.run_store(artifacts["chunks"], store_dir=tmp_path / "idx")


def test_unknown_store_is_refused(artifacts, tmp_path):
    from components.index.store import StoreError

    with pytest.raises(StoreError, match="store must be one of local, hopsworks"):
        steps.run_store(artifacts["embeddings"], store="s3", store_dir=tmp_path / "idx")
