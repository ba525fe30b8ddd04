"""Embedding stores: where chunks and their embeddings live between indexing runs.

Two backends share one small interface (:class:`EmbeddingStore`): ``upsert`` replaces the chunks of every document
it is given and leaves other documents alone; ``read_all`` returns everything for building a search index.

* :class:`LocalEmbeddingStore` -- Parquet + FAISS in a directory (a PVC in the cluster), written atomically.
* :class:`HopsworksEmbeddingStore` -- feature group ``book_embeddings`` v1 in a Hopsworks feature store, with the
  embedding as an embedding-indexed array feature.

Chunk ids are content hashes (document + contextualized text), so re-indexing an unchanged document changes nothing
and an edited document's vanished chunks are removed.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from components.index import layout
from components.manifest import write_manifest

log = logging.getLogger(__name__)

HOPSWORKS_FEATURE_GROUP = "book_embeddings"
HOPSWORKS_FEATURE_GROUP_VERSION = 1


class StoreError(RuntimeError):
    """A store cannot accept the write (mismatched model or dimension, bad input) or cannot be reached."""


@dataclass
class Chunk:
    """One retrievable piece of a document, with the metadata the retriever returns."""

    chunk_id: str
    doc_id: str
    source: str
    text: str
    contextualized_text: str
    pages: list[int] = field(default_factory=list)
    headings: list[str] = field(default_factory=list)
    chunk_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON / Arrow ready)."""
        return asdict(self)


@dataclass
class UpsertStats:
    """What an upsert changed."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    documents: int = 0
    total: int = 0
    written: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def document_id(source: str) -> str:
    """Stable id of a document from its source name (the same file indexed again gets the same id)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def chunk_ids_for(doc_id: str, contextualized_texts: Sequence[str]) -> list[str]:
    """Content-hash ids for a document's chunks, in order.

    The id hashes the document id and the chunk's contextualized text; a text repeated within one document gets its
    occurrence number mixed in so ids stay unique.
    """
    seen: dict[str, int] = {}
    ids = []
    for text in contextualized_texts:
        occurrence = seen.get(text, 0)
        seen[text] = occurrence + 1
        digest = hashlib.sha256(f"{doc_id}\x00{occurrence}\x00{text}".encode("utf-8")).hexdigest()
        ids.append(digest[:32])
    return ids


@runtime_checkable
class EmbeddingStore(Protocol):
    """Where chunk embeddings are kept."""

    def upsert(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> UpsertStats:
        """Make each document in ``chunks`` hold exactly these chunks; leave other documents unchanged."""
        ...

    def read_all(self) -> tuple[list[Chunk], np.ndarray]:
        """Every stored chunk and its embedding (row i belongs to chunk i)."""
        ...


def _validate_batch(chunks: Sequence[Chunk], embeddings: np.ndarray) -> np.ndarray:
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2:
        raise StoreError(f"embeddings must be a 2-d (n, dim) array, got shape {vectors.shape}")
    if len(chunks) != len(vectors):
        raise StoreError(f"got {len(chunks)} chunks but {len(vectors)} embeddings")
    ids = [c.chunk_id for c in chunks]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise StoreError(f"chunk id {dup!r} appears more than once in one upsert")
    return np.ascontiguousarray(vectors)


def _merge(
    existing: list[Chunk], existing_vectors: np.ndarray, chunks: Sequence[Chunk], vectors: np.ndarray
) -> tuple[list[Chunk], np.ndarray, UpsertStats, bool]:
    """Replace the incoming documents' chunks in ``existing``; return the new rows, stats, and whether anything changed."""
    incoming_docs = {c.doc_id for c in chunks}
    old_by_doc: dict[str, list[Chunk]] = {}
    keep_rows: list[int] = []
    for row, chunk in enumerate(existing):
        if chunk.doc_id in incoming_docs:
            old_by_doc.setdefault(chunk.doc_id, []).append(chunk)
        else:
            keep_rows.append(row)
    new_by_doc: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        new_by_doc.setdefault(chunk.doc_id, []).append(chunk)
    stats = UpsertStats(documents=len(incoming_docs))
    changed = False
    for doc, new in new_by_doc.items():
        old = old_by_doc.get(doc, [])
        old_ids = {c.chunk_id for c in old}
        new_ids = {c.chunk_id for c in new}
        stats.added += len(new_ids - old_ids)
        stats.removed += len(old_ids - new_ids)
        stats.unchanged += len(new_ids & old_ids)
        # Same ids can still carry new metadata (a page break moved): compare whole rows, in chunk order.
        if sorted(old, key=lambda c: c.chunk_index) != sorted(new, key=lambda c: c.chunk_index):
            changed = True
    rows = [existing[i] for i in keep_rows] + list(chunks)
    dim = vectors.shape[1]
    merged = np.concatenate(
        [existing_vectors[keep_rows].reshape(-1, dim), vectors.reshape(-1, dim)], axis=0
    ).astype(np.float32, copy=False)
    order = sorted(range(len(rows)), key=lambda i: (rows[i].source, rows[i].chunk_index, rows[i].chunk_id))
    rows = [rows[i] for i in order]
    merged = np.ascontiguousarray(merged[order]) if len(order) else merged
    stats.total = len(rows)
    return rows, merged, stats, changed


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def model_label(model: str) -> str:
    """The comparable name of an embedding model: the folder name of a path, or the Hub id itself."""
    return Path(model).name if os.sep in model or Path(model).exists() else model


class LocalEmbeddingStore:
    """Parquet + FAISS in ``directory``, in the layout of :mod:`components.index.layout`.

    Every write builds a complete new version (chunks, search index, manifest) in a temporary folder and then swaps
    the ``CURRENT`` pointer, so a writer killed at any point leaves the previous index loadable and unchanged.
    Writers serialize on an advisory lock in the directory.

    Args:
        directory: the index directory (created when missing).
        embedding_model: model path or id that produced the embeddings (recorded; a later upsert with another
            model is refused, since vectors from two models cannot be compared).
        index_kind: search index to build on each write: ``flat`` (exact), ``hnsw`` or ``ivf``.
        index_params: parameters of ``index_kind`` (see :func:`components.index.search.index_params`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        embedding_model: str = "",
        index_kind: str = "flat",
        index_params: dict[str, int] | None = None,
    ) -> None:
        from components.index.search import index_params as _params

        self.directory = Path(directory)
        self.embedding_model = embedding_model
        self.index_kind = index_kind
        self.index_params = _params(index_kind, index_params)

    # -- reading -------------------------------------------------------------------------------------------------

    def _read_version(self) -> tuple[list[Chunk], np.ndarray, dict[str, Any]]:
        from components.manifest import verify_manifest

        try:
            version = layout.current_version_dir(self.directory)
        except layout.IndexLayoutError:
            return [], np.zeros((0, 0), dtype=np.float32), {}
        manifest = verify_manifest(version, kind=layout.MANIFEST_KIND)
        meta = manifest.get("meta", {})
        table = layout.read_chunks_table(version / layout.CHUNKS_FILE)
        dim = int(meta.get("dim", 0))
        vectors = layout.embeddings_from_column(table.column("embedding"), dim)
        columns = {name: table.column(name).to_pylist() for name in table.column_names if name != "embedding"}
        chunks = [
            Chunk(
                chunk_id=columns["chunk_id"][i],
                doc_id=columns["doc_id"][i],
                source=columns["source"][i],
                text=columns["text"][i],
                contextualized_text=columns["contextualized_text"][i],
                pages=list(columns["pages"][i] or []),
                headings=list(columns["headings"][i] or []),
                chunk_index=int(columns["chunk_index"][i]),
            )
            for i in range(table.num_rows)
        ]
        return chunks, vectors, meta

    def read_all(self) -> tuple[list[Chunk], np.ndarray]:
        """Every committed chunk and its embedding; empty when nothing was committed yet."""
        chunks, vectors, _ = self._read_version()
        return chunks, vectors

    # -- writing -------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / layout.LOCK_FILE, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _check_compatible(self, meta: dict[str, Any], dim: int) -> None:
        if not meta:
            return
        if int(meta.get("dim", dim)) != dim:
            raise StoreError(
                f"{self.directory} holds {meta.get('dim')}-d embeddings, the new ones are {dim}-d; "
                "index into a new directory"
            )
        stored = meta.get("embedding_model_label", "")
        if stored and self.embedding_model and stored != model_label(self.embedding_model):
            raise StoreError(
                f"{self.directory} holds embeddings from {stored!r}, not {model_label(self.embedding_model)!r}; "
                "index into a new directory"
            )

    def upsert(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> UpsertStats:
        """Replace the chunks of each document in ``chunks``; write a new version only when something changed."""
        vectors = _validate_batch(chunks, embeddings)
        with self._locked():
            existing, existing_vectors, meta = self._read_version()
            self._check_compatible(meta, vectors.shape[1])
            if not existing:
                existing_vectors = np.zeros((0, vectors.shape[1]), dtype=np.float32)
            rows, merged, stats, changed = _merge(existing, existing_vectors, chunks, vectors)
            same_index = bool(meta) and meta.get("index_kind") == self.index_kind and meta.get(
                "index_params"
            ) == self.index_params
            if changed or not same_index:
                self._commit(rows, merged)
                stats.written = True
        log.info("event=store_upsert store=local dir=%s %s", self.directory,
                 " ".join(f"{k}={v}" for k, v in stats.to_dict().items()))
        return stats

    def replace_all(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> UpsertStats:
        """Make the store hold exactly ``chunks`` (used to mirror another store into a local search index)."""
        vectors = _validate_batch(chunks, embeddings)
        with self._locked():
            existing, _, _ = self._read_version()
            old_ids = {c.chunk_id for c in existing}
            new_ids = {c.chunk_id for c in chunks}
            rows, merged, _, _ = _merge([], np.zeros((0, vectors.shape[1]), np.float32), chunks, vectors)
            self._commit(rows, merged)
        return UpsertStats(
            added=len(new_ids - old_ids), removed=len(old_ids - new_ids), unchanged=len(new_ids & old_ids),
            documents=len({c.doc_id for c in chunks}), total=len(rows), written=True,
        )

    def _commit(self, chunks: list[Chunk], vectors: np.ndarray) -> Path:
        """Write a full version next to the committed one, then point CURRENT at it."""
        import faiss
        import pyarrow as pa
        import pyarrow.parquet as pq

        from components.index.search import build_search_index

        versions = self.directory / layout.VERSIONS_DIR
        versions.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers(versions)
        dim = int(vectors.shape[1])
        tmp = versions / f".tmp-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            flat = vectors.reshape(-1)
            table = pa.table(
                {
                    "chunk_id": [c.chunk_id for c in chunks],
                    "doc_id": [c.doc_id for c in chunks],
                    "source": [c.source for c in chunks],
                    "text": [c.text for c in chunks],
                    "contextualized_text": [c.contextualized_text for c in chunks],
                    "pages": [list(c.pages) for c in chunks],
                    "headings": [list(c.headings) for c in chunks],
                    "chunk_index": [c.chunk_index for c in chunks],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), dim),
                },
                schema=layout.chunk_schema(dim),
            )
            pq.write_table(table, tmp / layout.CHUNKS_FILE)
            index = build_search_index(vectors, self.index_kind, **self.index_params)
            faiss.write_index(index, str(tmp / layout.FAISS_FILE))
            documents: dict[str, dict[str, Any]] = {}
            for c in chunks:
                doc = documents.setdefault(c.doc_id, {"source": c.source, "chunks": 0})
                doc["chunks"] += 1
            write_manifest(
                tmp,
                [layout.CHUNKS_FILE, layout.FAISS_FILE],
                kind=layout.MANIFEST_KIND,
                meta={
                    "embedding_model": self.embedding_model,
                    "embedding_model_label": model_label(self.embedding_model) if self.embedding_model else "",
                    "dim": dim,
                    "count": len(chunks),
                    "index_kind": self.index_kind,
                    "index_params": self.index_params,
                    "documents": documents,
                },
            )
            for name in (layout.CHUNKS_FILE, layout.FAISS_FILE):
                _fsync_path(tmp / name)
            _fsync_path(tmp)
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            final = versions / f"{stamp}-{uuid.uuid4().hex[:8]}"
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_path(versions)
        # The commit point: readers see either the old CURRENT or this one.
        from components.manifest import atomic_write_text

        atomic_write_text(self.directory / layout.CURRENT_NAME, f"{layout.VERSIONS_DIR}/{final.name}\n")
        self._prune(versions, keep=final.name)
        log.info("event=index_committed dir=%s version=%s chunks=%d kind=%s",
                 self.directory, final.name, len(chunks), self.index_kind)
        return final

    @staticmethod
    def _remove_leftovers(versions: Path) -> None:
        # Temporary folders of writers that died; safe to delete while we hold the lock.
        for leftover in versions.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    @staticmethod
    def _prune(versions: Path, keep: str) -> None:
        committed = sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))
        survivors = set(committed[-layout.KEEP_VERSIONS:]) | {keep}
        for name in committed:
            if name not in survivors:
                shutil.rmtree(versions / name, ignore_errors=True)


@dataclass
class HopsworksConfig:
    """Where the Hopsworks feature store is; the API key comes from ``HOPSWORKS_API_KEY`` only.

    Attributes:
        host: Hopsworks host name (e.g. ``c.app.hopsworks.ai``); empty = the SDK's default / in-cluster discovery.
        project: project name; empty = the key's default project.
        port: HTTPS port of the Hopsworks API.
        feature_group: feature group name.
        version: feature group version.
    """

    host: str = ""
    project: str = ""
    port: int = 443
    feature_group: str = HOPSWORKS_FEATURE_GROUP
    version: int = HOPSWORKS_FEATURE_GROUP_VERSION


def hopsworks_login(config: HopsworksConfig):
    """Log in with the real ``hopsworks`` SDK and return the project; the key is read from ``HOPSWORKS_API_KEY``."""
    api_key = os.environ.get("HOPSWORKS_API_KEY", "")
    if not api_key:
        raise StoreError("HOPSWORKS_API_KEY is not set; the hopsworks store needs an API key in that variable")
    import hopsworks

    kwargs: dict[str, Any] = {"api_key_value": api_key, "port": config.port}
    if config.host:
        kwargs["host"] = config.host
    if config.project:
        kwargs["project"] = config.project
    try:
        return hopsworks.login(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the SDK raises many types; report one, without the key
        raise StoreError(f"cannot log in to Hopsworks at {config.host or 'default host'}: {type(exc).__name__}") from exc


class HopsworksEmbeddingStore:
    """Chunks and embeddings in the Hopsworks feature group ``book_embeddings`` (version 1).

    Primary key ``chunk_id``; ``embedding`` is an array feature registered in an hsfs ``EmbeddingIndex`` (cosine
    similarity), so Hopsworks' vector database can search it too. The feature group is created on first use.

    Args:
        config: host / project / feature group; the API key is read from ``HOPSWORKS_API_KEY``.
        dim: embedding width, needed to declare the embedding index when the feature group is created.
        project: an already logged-in ``hopsworks`` project (default: log in with :func:`hopsworks_login`).
    """

    def __init__(self, config: HopsworksConfig | None = None, *, dim: int = 384, project: Any = None) -> None:
        self.config = config or HopsworksConfig()
        self.dim = dim
        self._project = project
        self._fg = None

    @property
    def project(self):
        if self._project is None:
            self._project = hopsworks_login(self.config)
        return self._project

    def feature_group(self):
        """The ``book_embeddings`` feature group, created with its embedding index if it does not exist."""
        if self._fg is None:
            from hsfs import embedding as hsfs_embedding

            fs = self.project.get_feature_store()
            index = hsfs_embedding.EmbeddingIndex()
            index.add_embedding(
                "embedding", self.dim, similarity_function_type=hsfs_embedding.SimilarityFunctionType.COSINE
            )
            self._fg = fs.get_or_create_feature_group(
                name=self.config.feature_group,
                version=self.config.version,
                primary_key=["chunk_id"],
                embedding_index=index,
                online_enabled=True,
                description="ragtune document chunks and their sentence embeddings",
            )
        return self._fg

    @staticmethod
    def _frame(chunks: Sequence[Chunk], vectors: np.ndarray):
        import pandas as pd

        return pd.DataFrame(
            {
                "chunk_id": [c.chunk_id for c in chunks],
                "doc_id": [c.doc_id for c in chunks],
                "source": [c.source for c in chunks],
                "text": [c.text for c in chunks],
                "contextualized_text": [c.contextualized_text for c in chunks],
                "pages": [[int(p) for p in c.pages] for c in chunks],
                "headings": [list(c.headings) for c in chunks],
                "chunk_index": [int(c.chunk_index) for c in chunks],
                "embedding": [row.tolist() for row in vectors],
            }
        )

    def upsert(self, chunks: Sequence[Chunk], embeddings: np.ndarray) -> UpsertStats:
        """Insert new chunks and delete the vanished chunks of the given documents."""
        vectors = _validate_batch(chunks, embeddings)
        if vectors.shape[1] != self.dim:
            raise StoreError(f"feature group {self.config.feature_group} holds {self.dim}-d embeddings, got {vectors.shape[1]}-d")
        fg = self.feature_group()
        existing, _ = self.read_all()
        docs = {c.doc_id for c in chunks}
        old = {c.chunk_id: c for c in existing if c.doc_id in docs}
        stale = [c for cid, c in old.items() if cid not in {n.chunk_id for n in chunks}]
        fresh_rows = [i for i, c in enumerate(chunks) if old.get(c.chunk_id) != c]
        stats = UpsertStats(
            added=sum(1 for c in chunks if c.chunk_id not in old),
            removed=len(stale),
            unchanged=sum(1 for c in chunks if c.chunk_id in old),
            documents=len(docs),
            total=len(existing) - len(stale) + sum(1 for c in chunks if c.chunk_id not in old),
        )
        if fresh_rows:
            fg.insert(self._frame([chunks[i] for i in fresh_rows], vectors[fresh_rows]), write_options={"wait_for_job": True})
            stats.written = True
        if stale:
            import pandas as pd

            # Deletes match on the primary key; remove_rows (hsfs >= 4.x) clears the online store too, older SDKs
            # only have the offline commit_delete_record.
            keys = pd.DataFrame({"chunk_id": [c.chunk_id for c in stale]})
            remove = getattr(fg, "remove_rows", None) or fg.commit_delete_record
            remove(keys)
            stats.written = True
        log.info("event=store_upsert store=hopsworks fg=%s v=%d %s", self.config.feature_group, self.config.version,
                 " ".join(f"{k}={v}" for k, v in stats.to_dict().items()))
        return stats

    def read_all(self) -> tuple[list[Chunk], np.ndarray]:
        """Every chunk in the feature group (offline read) and its embedding."""
        frame = self.feature_group().read(dataframe_type="pandas")
        chunks: list[Chunk] = []
        rows: list[list[float]] = []
        for record in frame.to_dict("records"):
            chunks.append(
                Chunk(
                    chunk_id=str(record["chunk_id"]),
                    doc_id=str(record["doc_id"]),
                    source=str(record["source"]),
                    text=str(record["text"]),
                    contextualized_text=str(record["contextualized_text"]),
                    pages=[int(p) for p in (record.get("pages") if record.get("pages") is not None else [])],
                    headings=[str(h) for h in (record.get("headings") if record.get("headings") is not None else [])],
                    chunk_index=int(record["chunk_index"]),
                )
            )
            rows.append(list(record["embedding"]))
        if not rows:
            return chunks, np.zeros((0, self.dim), np.float32)
        return chunks, np.asarray(rows, dtype=np.float32).reshape(len(rows), self.dim)
