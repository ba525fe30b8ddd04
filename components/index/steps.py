"""The four indexing steps as plain functions over artifact folders: load -> chunk -> embed -> store.

``component.py`` wraps each in a KFP component; tests and the benchmark call them directly. Every step writes its
output folder with a manifest (:mod:`components.manifest`) and verifies its input's manifest before reading it, so a
truncated or altered artifact stops the run with a message naming the file.

Artifact folders:

* documents (kind ``documents``): ``documents.json`` (source, doc_id, sha256, pages per document), ``skipped.json``,
  and ``docs/<doc_id>.json`` (docling's DoclingDocument JSON).
* chunks (kind ``chunks``): ``chunks.parquet`` with the :class:`~components.index.store.Chunk` fields.
* embeddings (kind ``embeddings``): ``chunks.parquet`` with an ``embedding`` float32[dim] column; the model in meta.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from components.index import layout
from components.index.store import Chunk, UpsertStats
from components.manifest import atomic_write_text, verify_manifest, write_manifest

log = logging.getLogger(__name__)

DOCUMENTS_JSON = "documents.json"
SKIPPED_JSON = "skipped.json"
DOCS_DIR = "docs"
STORES = ("local", "hopsworks")


def run_load(sources: Sequence[str], out_dir: str | Path, *, layout_models: str | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Convert ``sources`` with docling into ``out_dir``; returns ``{"documents": n, "skipped": [...]}``."""
    from components.index.load import LoadSettings, load_documents

    out = Path(out_dir)
    (out / DOCS_DIR).mkdir(parents=True, exist_ok=True)
    report = load_documents(sources, LoadSettings(layout_models=layout_models or None), progress=progress)
    listing = []
    for doc in report.documents:
        rel = f"{DOCS_DIR}/{doc.doc_id}.json"
        doc.document.save_as_json(out / rel)
        listing.append({**doc.summary(), "file": rel})
    skipped = [{"source": s.source, "reason": s.reason} for s in report.skipped]
    atomic_write_text(out / DOCUMENTS_JSON, json.dumps(listing, indent=2) + "\n")
    atomic_write_text(out / SKIPPED_JSON, json.dumps(skipped, indent=2) + "\n")
    write_manifest(out, kind="documents", meta={"documents": len(listing), "skipped": len(skipped)})
    return {"documents": len(listing), "skipped": skipped}


def read_documents(in_dir: str | Path) -> list[tuple[Any, str, str]]:
    """``(DoclingDocument, source, doc_id)`` for every document in a verified documents folder."""
    from docling_core.types.doc import DoclingDocument

    folder = Path(in_dir)
    verify_manifest(folder, kind="documents")
    listing = json.loads((folder / DOCUMENTS_JSON).read_text(encoding="utf-8"))
    return [(DoclingDocument.load_from_json(folder / d["file"]), d["source"], d["doc_id"]) for d in listing]


def _chunk_table(chunks: Sequence[Chunk], vectors: np.ndarray | None = None):
    import pyarrow as pa

    columns: dict[str, Any] = {
        "chunk_id": [c.chunk_id for c in chunks],
        "doc_id": [c.doc_id for c in chunks],
        "source": [c.source for c in chunks],
        "text": [c.text for c in chunks],
        "contextualized_text": [c.contextualized_text for c in chunks],
        "pages": pa.array([list(c.pages) for c in chunks], type=pa.list_(pa.int32())),
        "headings": pa.array([list(c.headings) for c in chunks], type=pa.list_(pa.string())),
        "chunk_index": pa.array([c.chunk_index for c in chunks], type=pa.int32()),
    }
    if vectors is not None:
        dim = int(vectors.shape[1])
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32()), dim
        )
    return pa.table(columns)


def _read_chunks(path: Path) -> tuple[list[Chunk], Any]:
    table = layout.read_chunks_table(path)
    cols = {name: table.column(name).to_pylist() for name in table.column_names if name != "embedding"}
    chunks = [
        Chunk(
            chunk_id=cols["chunk_id"][i], doc_id=cols["doc_id"][i], source=cols["source"][i], text=cols["text"][i],
            contextualized_text=cols["contextualized_text"][i], pages=list(cols["pages"][i] or []),
            headings=list(cols["headings"][i] or []), chunk_index=int(cols["chunk_index"][i]),
        )
        for i in range(table.num_rows)
    ]
    return chunks, table


def run_chunk(in_dir: str | Path, out_dir: str | Path, *, max_tokens: int = 256, tokenizer: str | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Chunk a documents folder into ``out_dir/chunks.parquet``."""
    import pyarrow.parquet as pq

    from components.index.chunking import ChunkSettings, chunk_documents

    settings = ChunkSettings(max_tokens=max_tokens, tokenizer=tokenizer or None)
    chunks = chunk_documents(read_documents(in_dir), settings, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(_chunk_table(chunks), out / layout.CHUNKS_FILE)
    write_manifest(out, [layout.CHUNKS_FILE], kind="chunks", meta={"chunks": len(chunks), "max_tokens": max_tokens})
    return {"chunks": len(chunks)}


def read_chunks(in_dir: str | Path) -> list[Chunk]:
    """The chunks of a verified chunks folder."""
    folder = Path(in_dir)
    verify_manifest(folder, kind="chunks")
    return _read_chunks(folder / layout.CHUNKS_FILE)[0]


def run_embed(in_dir: str | Path, out_dir: str | Path, *, embedding_model: str | None = None, batch_size: int = 64,
              progress: bool = True) -> dict[str, Any]:
    """Embed the contextualized text of every chunk into ``out_dir/chunks.parquet`` (with an embedding column)."""
    import pyarrow.parquet as pq

    from components.index.embed import Embedder

    chunks = read_chunks(in_dir)
    embedder = Embedder(embedding_model or None, batch_size=batch_size)
    vectors = embedder.encode([c.contextualized_text for c in chunks], progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(_chunk_table(chunks, vectors), out / layout.CHUNKS_FILE)
    write_manifest(out, [layout.CHUNKS_FILE], kind="embeddings",
                   meta={"chunks": len(chunks), "embedding_model": embedder.model_name, "dim": embedder.dim})
    return {"chunks": len(chunks), "embedding_model": embedder.model_name, "dim": embedder.dim}


def read_embeddings(in_dir: str | Path) -> tuple[list[Chunk], np.ndarray, dict[str, Any]]:
    """Chunks, their ``(n, dim)`` embeddings and the manifest meta of a verified embeddings folder."""
    folder = Path(in_dir)
    manifest = verify_manifest(folder, kind="embeddings")
    meta = manifest.get("meta", {})
    chunks, table = _read_chunks(folder / layout.CHUNKS_FILE)
    vectors = layout.embeddings_from_column(table.column("embedding"), int(meta["dim"]))
    return chunks, vectors, meta


def run_store(in_dir: str | Path, *, store: str = "local", store_dir: str | Path, ann: str = "flat",
              hopsworks_host: str = "", hopsworks_project: str = "", hopsworks_project_handle: Any = None
              ) -> dict[str, Any]:
    """Upsert the embeddings into the chosen store and leave a local search index in ``store_dir``.

    With ``store="hopsworks"`` the chunks go to the ``book_embeddings`` feature group and the local index is rebuilt
    from everything the feature group holds (the store is the source of truth). ``hopsworks_project_handle`` passes
    an already logged-in project (tests use a stand-in here).
    """
    from components.index.store import HopsworksConfig, HopsworksEmbeddingStore, LocalEmbeddingStore, StoreError

    if store not in STORES:
        raise StoreError(f"store must be one of {', '.join(STORES)}, got {store!r}")
    chunks, vectors, meta = read_embeddings(in_dir)
    local = LocalEmbeddingStore(store_dir, embedding_model=meta["embedding_model"], index_kind=ann)
    if store == "local":
        stats: UpsertStats = local.upsert(chunks, vectors)
        mirrored = None
    else:
        remote = HopsworksEmbeddingStore(
            HopsworksConfig(host=hopsworks_host, project=hopsworks_project), dim=int(meta["dim"]),
            project=hopsworks_project_handle,
        )
        stats = remote.upsert(chunks, vectors)
        all_chunks, all_vectors = remote.read_all()
        mirrored = local.replace_all(all_chunks, all_vectors).to_dict()
    return {"store": store, "store_dir": str(store_dir), "ann": ann, "stats": stats.to_dict(), "mirror": mirrored}
