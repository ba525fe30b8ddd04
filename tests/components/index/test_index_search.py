"""FAISS search over real MiniLM embeddings of the sample corpus: flat is exact, ANN kinds are close to it."""

from __future__ import annotations

import numpy as np
import pytest

from components.index.search import (
    INDEX_KINDS,
    MIN_ROWS_PER_SCAN_THREAD,
    LoadedIndex,
    ParallelFlatScan,
    ann_recall,
    build_search_index,
    index_params,
    load_index,
)
from components.index.store import Chunk, LocalEmbeddingStore, chunk_ids_for, document_id


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


def _unit_rows(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_flat_scan_equals_faiss_full_search(threads):
    vectors = _unit_rows(20_000)
    index = build_search_index(vectors, "flat")
    scan = ParallelFlatScan(index, threads)
    try:
        assert scan.ranges[0][0] == 0 and scan.ranges[-1][1] == len(vectors)
        assert all(a[1] == b[0] for a, b in zip(scan.ranges, scan.ranges[1:]))
        queries = _unit_rows(4, seed=1)
        queries[3] = vectors[19_999]  # its own best match lives in the last range
        for k in (1, 10, 100):
            expected_scores, expected_ids = index.search(queries, k)
            scores, ids = scan.search(queries, k)
            np.testing.assert_array_equal(ids, expected_ids)
            np.testing.assert_allclose(scores, expected_scores, rtol=1e-6)
        assert scan.search(queries[3:], 1)[1][0, 0] == 19_999
    finally:
        scan.close()


def test_a_large_flat_index_splits_single_queries_over_threads(tmp_path):
    n = 2 * MIN_ROWS_PER_SCAN_THREAD + 10
    vectors = _unit_rows(n, seed=2)
    doc = document_id("synthetic.md")
    texts = [f"synthetic chunk {i}" for i in range(n)]
    chunks = [Chunk(chunk_id=cid, doc_id=doc, source="synthetic.md", text=t, contextualized_text=t, chunk_index=i)
              for i, (t, cid) in enumerate(zip(texts, chunk_ids_for(doc, texts)))]
    LocalEmbeddingStore(tmp_path, index_kind="flat").upsert(chunks, vectors)
    serial, parallel = load_index(tmp_path), load_index(tmp_path, threads=2)
    assert not serial.parallel_scan and parallel.parallel_scan
    queries = np.concatenate([vectors[[5, n - 1]], _unit_rows(3, seed=3)])
    for batch in (queries[:1], queries[1:2], queries):  # one query: split scan; five: FAISS over queries
        expected = [[h.chunk_id for h in hits] for hits in serial.search(batch, 10)]
        assert [[h.chunk_id for h in hits] for hits in parallel.search(batch, 10)] == expected
    assert parallel.search(vectors[n - 1], 1)[0][0].text == f"synthetic chunk {n - 1}"


def test_small_or_approximate_indexes_keep_faiss_search(tmp_path, corpus_chunks, corpus_vectors):
    LocalEmbeddingStore(tmp_path / "flat").upsert(corpus_chunks, corpus_vectors)
    assert not load_index(tmp_path / "flat", threads=2).parallel_scan  # 83 vectors: a hand-off costs more
    many = _unit_rows(2 * MIN_ROWS_PER_SCAN_THREAD, seed=4)
    assert not LoadedIndex(tmp_path, {"meta": {"index_kind": "hnsw"}}, _table(len(many)),
                           build_search_index(many, "hnsw", m=4, ef_construction=8), threads=2).parallel_scan
    with pytest.raises(ValueError, match="at least 2 threads"):
        ParallelFlatScan(build_search_index(many, "flat"), 1)


def _table(n: int):
    import pyarrow as pa

    return pa.table({
        "chunk_id": [str(i) for i in range(n)], "text": [""] * n, "source": [""] * n,
        "pages": [[] for _ in range(n)], "headings": [[] for _ in range(n)], "chunk_index": list(range(n)),
    })
