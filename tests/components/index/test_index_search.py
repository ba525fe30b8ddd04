"""FAISS search over real MiniLM embeddings of the sample corpus: flat is exact, ANN kinds are close to it."""

from __future__ import annotations

import numpy as np
import pytest

from components.index.search import INDEX_KINDS, ann_recall, build_search_index, index_params, load_index
from components.index.store import LocalEmbeddingStore


def test_flat_search_returns_each_chunk_first_for_its_own_vector(corpus_index_dir, corpus_chunks, corpus_vectors):
    index = load_index(corpus_index_dir)
    results = index.search(corpus_vectors[:10], 5)
    for chunk, hits in zip(corpus_chunks[:10], results):
        assert hits[0].chunk_id == chunk.chunk_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert (hits[0].source, hits[0].pages, hits[0].headings, hits[0].chunk_index) == (
            chunk.source, chunk.pages, chunk.headings, chunk.chunk_index)


def test_scores_are_cosine_similarities(corpus_index_dir, corpus_vectors, embedder):
    index = load_index(corpus_index_dir)
    query = embedder.encode(["How do I add a note to an exception?"])
    hits = index.search(query, 3)[0]
    exact = build_search_index(corpus_vectors, "flat").search(query, 3)[0][0]
    assert [round(h.score, 5) for h in hits] == [round(float(s), 5) for s in exact]
    assert "add_note" in hits[0].text or "notes" in hits[0].text


def test_k_larger_than_the_index_and_bad_queries(corpus_index_dir, corpus_vectors):
    index = load_index(corpus_index_dir)
    hits = index.search(corpus_vectors[:1], index.size + 10)[0]
    assert len(hits) == index.size
    assert index.search(corpus_vectors[0], 2)[0][0].score == pytest.approx(1.0, abs=1e-4)  # a single vector is fine
    with pytest.raises(ValueError, match=r"\(q, 384\)"):
        index.search(np.zeros((1, 10), np.float32), 3)
    with pytest.raises(ValueError, match="k must be"):
        index.search(corpus_vectors[:1], 0)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_against_flat_on_real_embeddings(kind, corpus_vectors, embedder):
    queries = embedder.encode([
        "import a module", "exception handling", "virtual environment", "regular expressions",
        "finally clause", "package __init__", "pip install", "compress data", "timeit", "sys.path",
    ])
    recall = ann_recall(corpus_vectors, queries, kind, k=10)
    assert recall >= 0.9, f"{kind} recall@10 vs flat = {recall}"


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_index_kind_and_params_survive_a_reload(tmp_path, kind, corpus_chunks, corpus_vectors):
    params = {"hnsw": {"ef_search": 48}, "ivf": {"nprobe": 3}, "flat": {}}[kind]
    LocalEmbeddingStore(tmp_path, index_kind=kind, index_params=params).upsert(corpus_chunks, corpus_vectors)
    index = load_index(tmp_path)
    assert index.kind == kind
    assert index.params == index_params(kind, params)
    hits = index.search(corpus_vectors[:5], 3)
    assert all(len(h) == 3 for h in hits)
    assert sum(h[0].chunk_id == c.chunk_id for h, c in zip(hits, corpus_chunks[:5])) >= 4


def test_unknown_kind_and_parameter_are_refused():
    with pytest.raises(ValueError, match="unknown index kind 'lsh'"):
        index_params("lsh")
    with pytest.raises(ValueError, match="has no parameter 'nprobe'"):
        index_params("hnsw", {"nprobe": 4})
