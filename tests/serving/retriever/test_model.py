"""RetrieverModel without a server: which embedding model it picks for an index, and search before load."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.index.embed import default_embedding_model
from serving.retriever.model import RetrieverModel
from serving.retriever.protocol import Query
from serving.retriever.settings import load_settings


def model_for(tmp_path: Path, **overrides) -> RetrieverModel:
    return RetrieverModel(load_settings(index_dir=str(tmp_path), **overrides))


def test_index_built_elsewhere_with_the_default_model_uses_the_local_copy(tmp_path):
    default = Path(default_embedding_model())
    recorded = str(Path("/other/machine/site-packages") / default.parent.name / default.name)
    assert model_for(tmp_path)._embedding_model_for(recorded) == str(default)


def test_other_recorded_models_are_kept_and_configuration_wins(tmp_path):
    assert model_for(tmp_path)._embedding_model_for("/other/machine/my-model") == "/other/machine/my-model"
    assert model_for(tmp_path)._embedding_model_for("org/hub-model") == "org/hub-model"
    assert model_for(tmp_path)._embedding_model_for(str(tmp_path)) == str(tmp_path)
    assert model_for(tmp_path)._embedding_model_for("") is None
    configured = model_for(tmp_path, embedding_model="org/configured")
    assert configured._embedding_model_for("/other/machine/my-model") == "org/configured"


def test_search_before_load_is_refused(tmp_path):
    model = model_for(tmp_path)
    assert model.ready is False
    with pytest.raises(RuntimeError, match="not loaded"):
        model.search([Query("q", 1)])


@pytest.mark.parametrize("mode, encoder", [("torch", "Embedder"), ("onnx", "OnnxEncoder"), ("auto", "OnnxEncoder")])
def test_query_encoder_setting_picks_the_encoder_and_results_agree(sample_index, mode, encoder):
    pytest.importorskip("onnxruntime")
    model = RetrieverModel(load_settings(index_dir=str(sample_index), threads=1, query_encoder=mode))
    assert model.load() is True
    assert type(model.encoder).__name__ == encoder
    hits = model.search([Query("approximate nearest neighbour graph", 3)])[0]
    expected = model.index.search(model.embedder.encode(["approximate nearest neighbour graph"]), 3)[0]
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in expected]


def test_int8_query_encoder_setting_loads_the_quantized_export(sample_index):
    pytest.importorskip("onnxruntime")
    model = RetrieverModel(load_settings(index_dir=str(sample_index), threads=1, query_encoder="onnx-int8"))
    assert model.load() is True
    assert type(model.encoder).__name__ == "OnnxEncoder" and model.encoder.int8 is True
    top = model.search([Query("approximate nearest neighbour graph", 1)])[0]
    assert top[0].chunk_id == model.index.search(model.embedder.encode(["approximate nearest neighbour graph"]), 1)[0][0].chunk_id


def test_a_single_query_on_a_large_flat_index_scans_over_the_granted_threads(tmp_path):
    import numpy as np

    from components.index.search import MIN_ROWS_PER_SCAN_THREAD
    from components.index.store import Chunk, LocalEmbeddingStore, chunk_ids_for, document_id

    n = 2 * MIN_ROWS_PER_SCAN_THREAD + 1
    vectors = np.random.default_rng(0).standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc, texts = document_id("synthetic.md"), [f"chunk {i}" for i in range(n)]
    chunks = [Chunk(chunk_id=c, doc_id=doc, source="synthetic.md", text=t, contextualized_text=t, chunk_index=i)
              for i, (t, c) in enumerate(zip(texts, chunk_ids_for(doc, texts)))]
    LocalEmbeddingStore(tmp_path, embedding_model=default_embedding_model()).upsert(chunks, vectors)
    model = RetrieverModel(load_settings(index_dir=str(tmp_path), threads=2, query_encoder="torch"))
    assert model.load() is True
    assert model.index.parallel_scan is True
    queries = [Query("how do I read a file", 10), Query("retry a failed request", 5)]
    for batch in ([queries[0]], queries):  # one query: split scan; two = threads: FAISS over queries
        hits = model.search(batch)
        vectors_q = model.encoder.encode([q.text for q in batch])
        _, ids = model.index._faiss.search(vectors_q, 10)
        assert [[h.chunk_id for h in found] for found in hits] == [
            [chunks[i].chunk_id for i in row[: q.top_k]] for q, row in zip(batch, ids)]
