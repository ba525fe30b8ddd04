"""The Hopsworks embedding store.

Hopsworks (a feature store service) cannot run on this machine, so these tests STOP AT THE SDK BOUNDARY: the store's
code and the real ``hsfs.embedding.EmbeddingIndex`` run unchanged, but the logged-in project is a stand-in object
(``StandInProject`` below) that records what the store asks of the SDK: the feature group name, version, primary
key, embedding index and online flag, the schema of every inserted DataFrame, and the insert / read / delete calls.
``hopsworks.login`` itself is replaced by a recorder to check that the key comes from HOPSWORKS_API_KEY.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from components.index.search import load_index
from components.index.store import (
    EmbeddingStore,
    HopsworksConfig,
    HopsworksEmbeddingStore,
    StoreError,
    hopsworks_login,
)


class StandInFeatureGroup:
    """Keeps rows in a DataFrame keyed by the primary key and records every SDK call."""

    def __init__(self, **kwargs: Any) -> None:
        self.created_with = kwargs
        self.calls: list[tuple[str, Any]] = []
        self.rows = pd.DataFrame()

    def insert(self, frame: pd.DataFrame, write_options: dict | None = None) -> None:
        self.calls.append(("insert", {"columns": list(frame.columns), "rows": len(frame), "write_options": write_options,
                                      "dtypes": {c: str(t) for c, t in frame.dtypes.items()}, "frame": frame.copy()}))
        key = self.created_with["primary_key"][0]
        kept = self.rows[~self.rows[key].isin(frame[key])] if len(self.rows) else self.rows
        self.rows = pd.concat([kept, frame], ignore_index=True)

    def read(self, dataframe_type: str = "default") -> pd.DataFrame:
        self.calls.append(("read", dataframe_type))
        return self.rows.copy()

    def remove_rows(self, frame: pd.DataFrame) -> None:
        self.calls.append(("remove_rows", list(frame.columns), sorted(frame["chunk_id"])))
        self.rows = self.rows[~self.rows["chunk_id"].isin(frame["chunk_id"])].reset_index(drop=True)


class StandInFeatureStore:
    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], StandInFeatureGroup] = {}

    def get_or_create_feature_group(self, name: str, version: int, **kwargs: Any) -> StandInFeatureGroup:
        key = (name, version)
        if key not in self.groups:
            self.groups[key] = StandInFeatureGroup(name=name, version=version, **kwargs)
        return self.groups[key]


class StandInProject:
    def __init__(self) -> None:
        self.fs = StandInFeatureStore()

    def get_feature_store(self) -> StandInFeatureStore:
        return self.fs


@pytest.fixture
def project() -> StandInProject:
    return StandInProject()


def _only_group(project: StandInProject) -> StandInFeatureGroup:
    (group,) = project.fs.groups.values()
    return group


def test_feature_group_definition(project, corpus_chunks, corpus_vectors):
    from hsfs.embedding import EmbeddingIndex

    store = HopsworksEmbeddingStore(HopsworksConfig(host="h.example", project="books"), dim=384, project=project)
    assert isinstance(store, EmbeddingStore)
    store.upsert(corpus_chunks[:10], corpus_vectors[:10])
    group = _only_group(project)
    created = group.created_with
    assert (created["name"], created["version"]) == ("book_embeddings", 1)
    assert created["primary_key"] == ["chunk_id"]
    assert created["online_enabled"] is True
    index = created["embedding_index"]
    assert isinstance(index, EmbeddingIndex)
    (feature,) = index.get_embeddings()
    assert (feature.name, feature.dimension, feature.similarity_function_type) == ("embedding", 384, "cosine")


def test_insert_schema_and_read_back(project, corpus_chunks, corpus_vectors):
    store = HopsworksEmbeddingStore(dim=384, project=project)
    stats = store.upsert(corpus_chunks, corpus_vectors)
    assert (stats.added, stats.removed, stats.total, stats.written) == (len(corpus_chunks), 0, len(corpus_chunks), True)
    group = _only_group(project)
    inserts = [c for c in group.calls if c[0] == "insert"]
    assert len(inserts) == 1
    insert = inserts[0][1]
    assert insert["columns"] == ["chunk_id", "doc_id", "source", "text", "contextualized_text", "pages", "headings",
                                 "chunk_index", "embedding"]
    assert insert["rows"] == len(corpus_chunks)
    assert insert["dtypes"]["chunk_index"] == "int64"
    assert insert["write_options"] == {"wait_for_job": True}
    first = insert["frame"].iloc[0]
    assert isinstance(first["embedding"], list) and len(first["embedding"]) == 384
    assert all(isinstance(p, int) for p in first["pages"])
    assert ("read", "pandas") in group.calls

    chunks, vectors = store.read_all()
    assert {c.chunk_id for c in chunks} == {c.chunk_id for c in corpus_chunks}
    by_id = dict(zip((c.chunk_id for c in chunks), vectors))
    for chunk, vector in zip(corpus_chunks, corpus_vectors):
        np.testing.assert_allclose(by_id[chunk.chunk_id], vector, rtol=0, atol=1e-7)
    assert next(c for c in chunks if c.chunk_id == corpus_chunks[0].chunk_id) == corpus_chunks[0]


def test_unchanged_upsert_writes_nothing_and_edits_delete_stale_rows(project, corpus_chunks, corpus_vectors):
    store = HopsworksEmbeddingStore(dim=384, project=project)
    store.upsert(corpus_chunks, corpus_vectors)
    group = _only_group(project)
    group.calls.clear()
    again = store.upsert(corpus_chunks, corpus_vectors)
    assert (again.added, again.removed, again.written) == (0, 0, False)
    assert [c[0] for c in group.calls] == ["read"]

    doc = corpus_chunks[0].doc_id
    rows = [i for i, c in enumerate(corpus_chunks) if c.doc_id == doc]
    kept = rows[:-2]
    stale_ids = sorted(corpus_chunks[i].chunk_id for i in rows[-2:])
    group.calls.clear()
    stats = store.upsert([corpus_chunks[i] for i in kept], corpus_vectors[kept])
    assert (stats.removed, stats.added, stats.unchanged) == (2, 0, len(kept))
    assert ("remove_rows", ["chunk_id"], stale_ids) in group.calls
    assert len(store.read_all()[0]) == len(corpus_chunks) - 2


def test_run_store_mirrors_the_feature_group_into_a_local_search_index(tmp_path, project, corpus_chunks,
                                                                        corpus_vectors, embedder):
    import pyarrow.parquet as pq

    from components.index.steps import _chunk_table, run_store
    from components.manifest import write_manifest

    emb = tmp_path / "embeddings"
    emb.mkdir()
    pq.write_table(_chunk_table(corpus_chunks, corpus_vectors), emb / "chunks.parquet")
    write_manifest(emb, ["chunks.parquet"], kind="embeddings",
                   meta={"embedding_model": embedder.model_name, "dim": 384, "chunks": len(corpus_chunks)})
    result = run_store(emb, store="hopsworks", store_dir=tmp_path / "idx", hopsworks_project_handle=project)
    assert result["stats"]["added"] == len(corpus_chunks)
    assert result["mirror"]["total"] == len(corpus_chunks)
    index = load_index(tmp_path / "idx")
    assert index.size == len(corpus_chunks)
    assert index.search(corpus_vectors[:1], 1)[0][0].chunk_id == corpus_chunks[0].chunk_id


def test_login_reads_the_key_from_the_environment(monkeypatch):
    import hopsworks

    seen: dict[str, Any] = {}
    monkeypatch.setattr(hopsworks, "login", lambda **kwargs: seen.update(kwargs) or "project")
    monkeypatch.delenv("HOPSWORKS_API_KEY", raising=False)
    with pytest.raises(StoreError, match="HOPSWORKS_API_KEY is not set"):
        hopsworks_login(HopsworksConfig(host="h.example", project="books"))
    monkeypatch.setenv("HOPSWORKS_API_KEY", "secret-key-value")
    assert hopsworks_login(HopsworksConfig(host="h.example", project="books", port=8181)) == "project"
    assert seen == {"api_key_value": "secret-key-value", "host": "h.example", "project": "books", "port": 8181}


def test_login_failure_does_not_leak_the_key(monkeypatch):
    import hopsworks

    def refuse(**kwargs):
        raise ConnectionError(f"refused for key {kwargs['api_key_value']}")

    monkeypatch.setattr(hopsworks, "login", refuse)
    monkeypatch.setenv("HOPSWORKS_API_KEY", "secret-key-value")
    with pytest.raises(StoreError) as err:
        hopsworks_login(HopsworksConfig(host="h.example"))
    assert "secret-key-value" not in str(err.value)
    assert "ConnectionError" in str(err.value)


def test_dimension_mismatch_is_refused(project, corpus_chunks):
    store = HopsworksEmbeddingStore(dim=384, project=project)
    with pytest.raises(StoreError, match="384-d"):
        store.upsert(corpus_chunks[:2], np.ones((2, 8), np.float32))
