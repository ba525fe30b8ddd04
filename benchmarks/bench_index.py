"""Indexing benchmark (issue 2): run with `make bench` or `.venv/bin/python benchmarks/bench_index.py`.

Measures, side by side in one run:
1. embedding throughput of the index component's embed path (components.index.embed.Embedder.encode, what the
   embed_chunks step runs) vs bare SentenceTransformer.encode on the same chunks -- target ratio >= 0.9x;
2. docling pages/s on the sample PDF: bare docling (native PDF pipeline) vs the load step (with heading recovery);
3. ANN recall@10 against exact flat search, and per-query search time, on the corpus and on a 20k-vector set
   derived from it;
4. recall@5 on the QA set (tests/data/qa_sample_corpus.yaml).

Options: --rounds N (timed rounds per side, default 3), --synthetic N (vectors for the ANN part, default 20000).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

CORPUS = REPO_ROOT / "data" / "sample_corpus"
PDF = CORPUS / "python_tutorial_modules_errors.pdf"
QA = REPO_ROOT / "tests" / "data" / "qa_sample_corpus.yaml"


def _timed(fn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_docling(rounds: int) -> dict:
    from docling.datamodel.base_models import InputFormat
    from docling.datamodel.pipeline_options import NativePdfPipelineOptions
    from docling.document_converter import DocumentConverter, NativePdfFormatOption

    from components.index.load import LoadSettings, load_documents

    converter = DocumentConverter(format_options={
        InputFormat.PDF: NativePdfFormatOption(pipeline_options=NativePdfPipelineOptions(parser_threads=1))})
    pages = len(converter.convert(PDF).pages)  # warm-up: backend and pipeline initialisation
    bare = _timed(lambda: converter.convert(PDF), rounds)
    load_documents([PDF], LoadSettings())  # warm-up
    ours = _timed(lambda: load_documents([PDF], LoadSettings()), rounds)
    return {
        "pages": pages,
        "bare_docling_pages_per_s": round(pages / statistics.median(bare), 1),
        "load_step_pages_per_s": round(pages / statistics.median(ours), 1),
        "ratio": round(statistics.median(bare) / statistics.median(ours), 2),
    }


def bench_embedding(texts: list[str], rounds: int) -> dict:
    from sentence_transformers import SentenceTransformer

    from components.index.embed import Embedder, default_embedding_model

    ours = Embedder()
    bare = SentenceTransformer(default_embedding_model(), device="cpu")
    ours.encode(texts[:16])  # warm-up both
    bare.encode(texts[:16])
    ours_t, bare_t = [], []
    for _ in range(rounds):  # alternate so load changes on the machine hit both sides alike
        bare_t += _timed(lambda: bare.encode(texts), 1)
        ours_t += _timed(lambda: ours.encode(texts), 1)
    ours_rate = len(texts) / statistics.median(ours_t)
    bare_rate = len(texts) / statistics.median(bare_t)
    return {
        "chunks": len(texts),
        "component_chunks_per_s": round(ours_rate, 1),
        "bare_sentence_transformers_chunks_per_s": round(bare_rate, 1),
        "ratio": round(ours_rate / bare_rate, 2),
    }


def bench_ann(vectors: np.ndarray, queries: np.ndarray, label: str) -> dict:
    from components.index.search import ann_recall, build_search_index

    import faiss

    # One query at a time: FAISS's OpenMP threads only add synchronisation cost (and collapse on a busy 2-core box).
    faiss.omp_set_num_threads(1)
    out = {"vectors": int(len(vectors)), "queries": int(len(queries))}
    for kind in ("flat", "hnsw", "ivf"):
        index = build_search_index(vectors, kind)
        start = time.perf_counter()
        for q in queries:
            index.search(q[None, :], 10)
        per_query_ms = (time.perf_counter() - start) / len(queries) * 1000
        entry = {"search_ms_per_query": round(per_query_ms, 3)}
        if kind != "flat":
            entry["recall_at_10_vs_flat"] = round(ann_recall(vectors, queries, kind, k=10), 3)
        out[kind] = entry
    print(f"  [{label}] " + ", ".join(
        f"{k}: {v['search_ms_per_query']} ms/q" + (f", recall@10 {v['recall_at_10_vs_flat']}" if "recall_at_10_vs_flat" in v else "")
        for k, v in out.items() if isinstance(v, dict)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=20000)
    args = parser.parse_args(argv)

    from components.index.chunking import chunk_documents
    from components.index.embed import Embedder
    from components.index.load import load_documents
    from components.index.qa import load_qa, recall_at_k
    from components.index.search import load_index
    from components.index.store import LocalEmbeddingStore

    results: dict = {}
    print("== docling pages/s on the sample PDF (native pipeline)")
    results["docling"] = bench_docling(args.rounds)
    print(f"  bare docling {results['docling']['bare_docling_pages_per_s']} pages/s; load step "
          f"{results['docling']['load_step_pages_per_s']} pages/s (ratio {results['docling']['ratio']}x)")

    report = load_documents([CORPUS])
    chunks = chunk_documents([(d.document, d.source, d.doc_id) for d in report.documents])
    texts = [c.contextualized_text for c in chunks]
    print(f"== embedding throughput on {len(texts)} corpus chunks (contextualized text)")
    results["embedding"] = bench_embedding(texts, args.rounds)
    e = results["embedding"]
    print(f"  component {e['component_chunks_per_s']} chunks/s vs bare SentenceTransformer.encode "
          f"{e['bare_sentence_transformers_chunks_per_s']} chunks/s: ratio {e['ratio']}x (target >= 0.9x)")

    embedder = Embedder()
    vectors = embedder.encode(texts)
    items = load_qa(QA)
    queries = embedder.encode([i.question for i in items])
    print("== ANN vs flat (recall@10 against exact search, single-query latency)")
    results["ann_corpus"] = bench_ann(vectors, queries, f"corpus, {len(vectors)} chunks")
    rng = np.random.default_rng(0)
    # A larger set with the corpus's structure: each synthetic vector is a real chunk vector plus noise.
    base = vectors[rng.integers(0, len(vectors), args.synthetic)]
    noisy = base + rng.normal(scale=0.05, size=base.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    results["ann_synthetic"] = bench_ann(noisy.astype(np.float32), queries, f"synthetic, {args.synthetic} vectors")

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        LocalEmbeddingStore(tmp, embedding_model=embedder.model_name).upsert(chunks, vectors)
        qa = recall_at_k(load_index(tmp), embedder, items, k=5)
    results["qa_recall_at_5"] = round(qa.recall, 3)
    print(f"== QA set: recall@5 = {qa.recall:.3f} over {len(items)} questions (misses: {qa.misses})")
    print(json.dumps({"benchmark": "index", **results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
