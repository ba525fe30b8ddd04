"""Retrieval quality on the sample corpus: recall@5 >= 0.8 over the QA set in tests/data/qa_sample_corpus.yaml
(real docling chunks, real MiniLM embeddings, real FAISS flat index)."""

from __future__ import annotations

from components.index.qa import load_qa, recall_at_k
from components.index.search import load_index
from tests.components.index.conftest import QA_SET


def test_qa_set_covers_every_document(corpus_chunks):
    items = load_qa(QA_SET)
    assert len(items) >= 30
    assert {i.source for i in items} == {c.source for c in corpus_chunks}
    pdf_pages = {p for i in items if i.source.endswith(".pdf") for p in i.pages}
    assert len(pdf_pages) >= 12  # questions spread over the PDF, not one page


def test_recall_at_5_is_at_least_0_8(corpus_index_dir, embedder):
    result = recall_at_k(load_index(corpus_index_dir), embedder, load_qa(QA_SET), k=5)
    assert result.recall >= 0.8, f"recall@5 = {result.recall:.3f}; missed: {result.misses}"


def test_a_wrong_answer_key_is_caught(corpus_index_dir, embedder):
    """The metric can fail: the same questions with every page shifted by 8 mostly miss."""
    items = [i for i in load_qa(QA_SET) if i.pages]
    for item in items:
        item.pages = [p + 8 if p <= 8 else p - 8 for p in item.pages]
    assert recall_at_k(load_index(corpus_index_dir), embedder, items, k=5).recall < 0.5
