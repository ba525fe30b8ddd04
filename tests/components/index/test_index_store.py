"""The local embedding store: round trip, idempotent re-indexing, replacement of edited documents, atomic writes
(a writer SIGKILLed mid-write leaves the previous index loadable and unchanged), and manifest verification."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from components.index import layout
from components.index.search import IndexLoadError, load_index
from components.index.store import (
    Chunk,
    EmbeddingStore,
    LocalEmbeddingStore,
    StoreError,
    chunk_ids_for,
    document_id,
)
from components.manifest import sha256_file
from tests.components.index.conftest import REPO_ROOT


def _chunks(source: str, texts: list[str]) -> list[Chunk]:
    doc = document_id(source)
    ids = chunk_ids_for(doc, texts)
    return [Chunk(cid, doc, source, t, f"Heading\n{t}", [n + 1], ["Heading"], n) for n, (cid, t) in enumerate(zip(ids, texts))]


def _unit(rows: int, seed: int, dim: int = 384) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _snapshot(directory: Path) -> dict[str, str]:
    """sha256 of every committed file reachable from CURRENT, plus CURRENT itself."""
    version = layout.current_version_dir(directory)
    files = {"CURRENT": sha256_file(directory / layout.CURRENT_NAME)}
    files.update({p.name: sha256_file(p) for p in sorted(version.iterdir())})
    return files


def test_local_store_satisfies_the_protocol(tmp_path):
    assert isinstance(LocalEmbeddingStore(tmp_path), EmbeddingStore)


def test_round_trip_with_real_embeddings(tmp_path, corpus_chunks, corpus_vectors, embedder):
    store = LocalEmbeddingStore(tmp_path / "idx", embedding_model=embedder.model_name)
    stats = store.upsert(corpus_chunks, corpus_vectors)
    assert (stats.added, stats.removed, stats.total, stats.written) == (len(corpus_chunks), 0, len(corpus_chunks), True)
    chunks, vectors = store.read_all()
    by_id = {c.chunk_id: (c, v) for c, v in zip(chunks, vectors)}
    assert len(by_id) == len(corpus_chunks)
    for original, vector in zip(corpus_chunks, corpus_vectors):
        stored, stored_vector = by_id[original.chunk_id]
        assert stored == original
        np.testing.assert_array_equal(stored_vector, vector)
    index = load_index(tmp_path / "idx")
    assert (index.size, index.dim, index.embedding_model) == (len(corpus_chunks), 384, embedder.model_name)


def test_reindexing_unchanged_documents_adds_nothing(tmp_path, corpus_chunks, corpus_vectors, embedder):
    directory = tmp_path / "idx"
    store = LocalEmbeddingStore(directory, embedding_model=embedder.model_name)
    store.upsert(corpus_chunks, corpus_vectors)
    before = _snapshot(directory)
    again = store.upsert(corpus_chunks, corpus_vectors)
    assert (again.added, again.removed, again.unchanged, again.written) == (0, 0, len(corpus_chunks), False)
    assert again.total == len(corpus_chunks)
    assert _snapshot(directory) == before
    assert load_index(directory).size == len(corpus_chunks)


def test_edited_document_replaces_its_chunks_only(tmp_path, corpus_copy, embedder):
    """Index the real corpus copy, edit the Markdown file, index that file again: its old chunks are replaced."""
    from components.index.chunking import chunk_documents
    from components.index.load import load_documents

    def index(paths):
        report = load_documents(paths)
        chunks = chunk_documents([(d.document, d.source, d.doc_id) for d in report.documents])
        return chunks, store.upsert(chunks, embedder.encode([c.contextualized_text for c in chunks]))

    store = LocalEmbeddingStore(tmp_path / "idx", embedding_model=embedder.model_name)
    md = corpus_copy / "standard_library_tour.md"
    first, _ = index([corpus_copy / "virtual_environments.html", md])
    old_md_ids = {c.chunk_id for c in first if c.source.endswith(".md")}
    html_ids = {c.chunk_id for c in first if c.source.endswith(".html")}

    text = md.read_text(encoding="utf-8")
    text = text.replace("## Data Compression", "## Data Compression\n\nThe zstd format is not in this old tour.")
    text = text.split("## Quality Control")[0]  # drop the last two sections
    md.write_text(text, encoding="utf-8")
    second, stats = index([md])

    new_md_ids = {c.chunk_id for c in second}
    assert stats.removed == len(old_md_ids - new_md_ids) > 0
    assert stats.added == len(new_md_ids - old_md_ids) > 0
    assert stats.unchanged == len(new_md_ids & old_md_ids) > 0
    stored, _ = store.read_all()
    stored_ids = {c.chunk_id for c in stored}
    assert stored_ids == html_ids | new_md_ids
    assert not any("doctest" in c.text for c in stored if c.source.endswith(".md"))
    assert any("zstd" in c.text for c in stored)
    assert load_index(tmp_path / "idx").size == len(stored_ids)


def test_chunk_ids_are_content_hashes():
    doc = document_id("docs/a.md")
    assert chunk_ids_for(doc, ["x", "y"]) == chunk_ids_for(doc, ["x", "y"])
    assert chunk_ids_for(doc, ["x"])[0] != chunk_ids_for(document_id("docs/b.md"), ["x"])[0]
    repeated = chunk_ids_for(doc, ["same", "same"])
    assert len(set(repeated)) == 2


def test_bad_batches_are_refused(tmp_path):
    store = LocalEmbeddingStore(tmp_path)
    chunks = _chunks("d/a.md", ["one", "two"])
    with pytest.raises(StoreError, match="2 chunks but 3 embeddings"):
        store.upsert(chunks, _unit(3, 0))
    with pytest.raises(StoreError, match="more than once"):
        store.upsert(chunks + chunks[:1], _unit(3, 0))


def test_other_model_or_dimension_is_refused(tmp_path):
    LocalEmbeddingStore(tmp_path, embedding_model="/models/all-MiniLM-L6-v2").upsert(_chunks("d/a.md", ["a"]), _unit(1, 0))
    with pytest.raises(StoreError, match="all-mpnet-base-v2"):
        LocalEmbeddingStore(tmp_path, embedding_model="/models/all-mpnet-base-v2").upsert(
            _chunks("d/b.md", ["b"]), _unit(1, 1))
    with pytest.raises(StoreError, match="384-d"):
        LocalEmbeddingStore(tmp_path, embedding_model="/models/all-MiniLM-L6-v2").upsert(
            _chunks("d/b.md", ["b"]), _unit(1, 1, dim=128))


def test_old_versions_are_pruned(tmp_path):
    store = LocalEmbeddingStore(tmp_path)
    for n in range(5):
        store.upsert(_chunks("d/a.md", [f"text {n}"]), _unit(1, n))
    versions = [p for p in (tmp_path / layout.VERSIONS_DIR).iterdir()]
    assert len(versions) == layout.KEEP_VERSIONS
    assert load_index(tmp_path)._texts == ["text 4"]


def test_missing_or_corrupt_index_raises_a_clear_error(tmp_path):
    with pytest.raises(IndexLoadError, match="does not exist"):
        load_index(tmp_path / "nowhere")
    with pytest.raises(IndexLoadError, match="holds no index"):
        load_index(tmp_path)
    LocalEmbeddingStore(tmp_path / "idx").upsert(_chunks("d/a.md", ["a", "b"]), _unit(2, 0))
    version = layout.current_version_dir(tmp_path / "idx")
    with open(version / layout.FAISS_FILE, "r+b") as fh:
        fh.seek(40)
        fh.write(b"\xff\xff\xff\xff")
    with pytest.raises(IndexLoadError, match="index.faiss sha256"):
        load_index(tmp_path / "idx")
    (version / layout.CHUNKS_FILE).unlink()
    with pytest.raises(IndexLoadError, match="chunks.parquet is listed in the manifest but missing"):
        load_index(tmp_path / "idx")
    (tmp_path / "idx" / layout.CURRENT_NAME).write_text("versions/gone\n")
    with pytest.raises(IndexLoadError, match="points to 'versions/gone'"):
        load_index(tmp_path / "idx")


WRITER = r"""
import sys, numpy as np
from components.index.store import Chunk, LocalEmbeddingStore, chunk_ids_for, document_id
directory, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
texts = [f"chunk {i} of run {seed} " + "padding " * 40 for i in range(n)]
doc = document_id("bulk/doc.md")
chunks = [Chunk(cid, doc, "bulk/doc.md", t, t, [1], ["Bulk"], i) for i, (cid, t) in enumerate(zip(chunk_ids_for(doc, texts), texts))]
rng = np.random.default_rng(seed)
vectors = rng.normal(size=(n, 384)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
print("ready", flush=True)
LocalEmbeddingStore(directory, index_kind=sys.argv[4]).upsert(chunks, vectors)
print("committed", flush=True)
"""


def _start_writer(directory: Path, rows: int, seed: int, kind: str = "flat") -> subprocess.Popen:
    """Start a writer process and return once it is about to write (the kill window starts there)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(rows), str(seed), kind],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_previous_index_intact(tmp_path):
    """SIGKILL a real writer process many times -- at random moments, and right after it starts writing files -- and
    every time the directory still loads and holds either exactly the previous version or (if the kill came after
    the commit) the new one."""
    directory = tmp_path / "idx"
    rows = 20000
    assert _start_writer(directory, rows, seed=0).wait(timeout=300) == 0
    # time a replacing write (read previous version, merge, write) so the kills can be spread over one
    second = _start_writer(directory, rows, seed=100)
    started = time.perf_counter()
    assert second.wait(timeout=300) == 0
    write_s = time.perf_counter() - started
    previous = _snapshot(directory)
    previous_texts = load_index(directory)._texts
    assert previous_texts[0].startswith("chunk 0 of run 100")

    rng = random.Random(1234)
    outcomes = {"intact": 0, "committed": 0, "leftovers": 0}
    for attempt in range(1, 7):
        proc = _start_writer(directory, rows, seed=attempt)
        if attempt % 2:
            # wait until the new version is being written, then kill within the first few file writes
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline and not any(
                p.name.startswith(".tmp-") for p in (directory / layout.VERSIONS_DIR).iterdir()
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05))
        else:
            time.sleep(rng.uniform(0.05, 0.9) * write_s)  # any moment: reading, merging, writing or committing
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if any(p.name.startswith(".tmp-") for p in (directory / layout.VERSIONS_DIR).iterdir()):
            outcomes["leftovers"] += 1  # the kill landed while a version was half written
        loaded = load_index(directory)  # must never raise
        if _snapshot(directory) == previous:
            outcomes["intact"] += 1
            assert loaded._texts == previous_texts
        else:
            outcomes["committed"] += 1
            assert loaded._texts[0].startswith(f"chunk 0 of run {attempt}")
            assert loaded.size == rows
            previous, previous_texts = _snapshot(directory), loaded._texts
    assert outcomes["leftovers"] >= 1, f"no kill landed mid-write: {outcomes}"
    assert outcomes["intact"] >= 1, outcomes
    # the next writer cleans up what the killed ones left and commits normally
    last = _start_writer(directory, 50, seed=99)
    assert last.wait(timeout=300) == 0
    assert not any(p.name.startswith(".tmp-") for p in (directory / layout.VERSIONS_DIR).iterdir())
    assert load_index(directory).size == 50
    json.loads((layout.current_version_dir(directory) / "manifest.json").read_text())
