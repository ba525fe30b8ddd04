"""Fixtures shared by the chart tests that start real servers: one small real index per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def helm_sample_index(tmp_path_factory):
    """A real index (real embedder, real local store, real FAISS) over the retriever tests' small corpus."""
    from tests.serving.retriever.conftest import build_index

    directory = tmp_path_factory.mktemp("helm-index")
    build_index(directory)
    return directory
