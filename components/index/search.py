"""FAISS search over chunk embeddings: build (flat, HNSW, IVF), load a committed index, and search it.

Vectors are L2-normalized, so inner product = cosine similarity. ``flat`` (IndexFlatIP) is exact and the default;
``hnsw`` and ``ivf`` trade a little recall for speed on large corpora -- :func:`ann_recall` measures how much.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from components.index import layout
from components.manifest import ManifestError, verify_manifest

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")

#: defaults for the ANN kinds; recorded in the manifest and re-applied at load
DEFAULT_PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"m": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 0, "nprobe": 16},  # nlist 0 = about 4 * sqrt(n), bounded by the training set size
}


#: Splitting one query's flat scan over threads pays off only above this many vectors per thread (measured on the
#: 2-core development machine: at 5k vectors the thread hand-off costs more than it saves, from 10k on it wins).
MIN_ROWS_PER_SCAN_THREAD = 4096


class IndexLoadError(RuntimeError):
    """A local index is missing, incomplete or corrupt; the message names the directory or file."""


@dataclass
class Hit:
    """One search result: a chunk and its cosine similarity to the query."""

    chunk_id: str
    text: str
    score: float
    source: str
    pages: list[int]
    headings: list[str]
    chunk_index: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def index_params(kind: str, params: dict[str, Any] | None = None) -> dict[str, int]:
    """Defaults for ``kind`` overlaid with ``params``; unknown kinds or parameter names raise ``ValueError``."""
    if kind not in DEFAULT_PARAMS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    merged = dict(DEFAULT_PARAMS[kind])
    for name, value in (params or {}).items():
        if name not in merged:
            raise ValueError(f"index kind {kind!r} has no parameter {name!r} (known: {', '.join(merged) or 'none'})")
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"index parameter {name!r} must be a non-negative integer, got {value!r}")
        merged[name] = value
    return merged


def _ivf_nlist(n: int, requested: int) -> int:
    # FAISS wants about 39 training points per centroid; fewer gives poor centroids and a warning.
    wanted = requested or max(1, int(4 * math.sqrt(max(n, 1))))
    return max(1, min(wanted, n // 39 if n >= 39 else 1))


def build_search_index(embeddings: np.ndarray, kind: str = "flat", **params: int):
    """Build a FAISS inner-product index over ``embeddings`` (``(n, dim)`` float32, unit rows).

    Args:
        embeddings: the chunk vectors, row i = chunk i.
        kind: ``flat`` (exact IndexFlatIP), ``hnsw`` (IndexHNSWFlat) or ``ivf`` (IndexIVFFlat).
        **params: ``m``, ``ef_construction``, ``ef_search`` for hnsw; ``nlist``, ``nprobe`` for ivf.

    Returns:
        a ``faiss.Index`` holding all rows.
    """
    import faiss

    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(f"embeddings must be a 2-d (n, dim) array, got shape {vectors.shape}")
    n, dim = vectors.shape
    p = index_params(kind, params)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, max(2, p["m"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(1, p["ef_construction"])
        index.hnsw.efSearch = max(1, p["ef_search"])
    else:
        nlist = _ivf_nlist(n, p["nlist"])
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        if n:
            index.train(vectors)
        index.nprobe = max(1, min(p["nprobe"], nlist))
    if n:
        index.add(vectors)
    return index


def _apply_search_params(index, kind: str, params: dict[str, int]) -> None:
    import faiss

    if kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = max(1, params.get("ef_search", 64))
    elif kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = max(1, min(params.get("nprobe", 16), ivf.nlist))


def ann_recall(embeddings: np.ndarray, queries: np.ndarray, kind: str, k: int = 10, **params: int) -> float:
    """Recall@k of an ANN index of ``kind`` against exact flat search: mean |ANN top-k ∩ flat top-k| / k."""
    k = min(k, len(embeddings))
    if k == 0 or len(queries) == 0:
        raise ValueError("ann_recall needs at least one embedding and one query")
    exact = build_search_index(embeddings, "flat")
    approx = build_search_index(embeddings, kind, **params)
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    _, found = approx.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    hits = sum(len(set(t[t >= 0]) & set(f[f >= 0])) for t, f in zip(truth, found))
    return hits / (k * len(queries))


class ParallelFlatScan:
    """Exact top-k over an ``IndexFlatIP``'s vectors, each query's scan split into one row range per thread.

    FAISS parallelises a flat search over queries, so a single query scans every vector on one core while the others
    idle. Here the rows are cut into ``threads`` contiguous ranges, each scanned by FAISS's own kernel on its own
    thread (FAISS releases the GIL), and the per-range top-k lists are merged. The ranges are views of the index's
    storage: no vector is copied. Results equal FAISS's full search (equal scores from different ranges: the lower
    range first).
    """

    def __init__(self, faiss_index, threads: int) -> None:
        import faiss

        if threads < 2:
            raise ValueError(f"a parallel scan needs at least 2 threads, got {threads}")
        n, dim = faiss_index.ntotal, faiss_index.d
        self._index = faiss_index  # owns the memory the view below reads
        self._vectors = faiss.rev_swig_ptr(faiss.downcast_index(faiss_index).get_xb(), n * dim).reshape(n, dim)
        bounds = np.linspace(0, n, threads + 1).astype(np.int64)
        self.ranges: list[tuple[int, int]] = [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        # One scan per thread: FAISS's OpenMP team in a worker would only oversubscribe the cores.
        self._pool = ThreadPoolExecutor(
            threads - 1, thread_name_prefix="flat-scan", initializer=faiss.omp_set_num_threads, initargs=(1,)
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores and row ids, ``(q, k)`` each, best first; ``k`` must not exceed the number of vectors."""
        import faiss

        futures = [self._pool.submit(self._scan, queries, lo, hi, k) for lo, hi in self.ranges[1:]]
        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            parts = [self._scan(queries, *self.ranges[0], k)]
        finally:
            faiss.omp_set_num_threads(previous)
        parts += [f.result() for f in futures]
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def _scan(self, queries: np.ndarray, lo: int, hi: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        scores, ids = faiss.knn(queries, self._vectors[lo:hi], min(k, hi - lo), metric=faiss.METRIC_INNER_PRODUCT)
        return scores, ids + lo

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=False)


class LoadedIndex:
    """A committed index in memory: chunk metadata plus the FAISS index, ready to search.

    With ``threads`` > 1 and an exact (flat) index large enough to gain from it, a search of fewer queries than
    threads splits each query's scan over the threads (:class:`ParallelFlatScan`); otherwise FAISS searches, which
    parallelises over queries.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any], table, faiss_index, threads: int = 1) -> None:
        meta = manifest.get("meta", {})
        self.directory = directory
        self.manifest = manifest
        self.embedding_model: str = meta.get("embedding_model", "")
        self.dim: int = int(meta.get("dim", faiss_index.d))
        self.kind: str = meta.get("index_kind", "flat")
        self.params: dict[str, int] = meta.get("index_params", {})
        self._faiss = faiss_index
        self.threads = max(1, threads)
        self._parallel: ParallelFlatScan | None = None
        if self.kind == "flat" and self.threads > 1 and faiss_index.ntotal >= self.threads * MIN_ROWS_PER_SCAN_THREAD:
            self._parallel = ParallelFlatScan(faiss_index, self.threads)
        # Columns as Python lists once at load, so a search only indexes into them.
        self._chunk_ids: list[str] = table.column("chunk_id").to_pylist()
        self._texts: list[str] = table.column("text").to_pylist()
        self._sources: list[str] = table.column("source").to_pylist()
        self._pages: list[list[int]] = table.column("pages").to_pylist()
        self._headings: list[list[str]] = table.column("headings").to_pylist()
        self._chunk_index: list[int] = table.column("chunk_index").to_pylist()

    @property
    def size(self) -> int:
        """Number of chunks."""
        return len(self._chunk_ids)

    @property
    def parallel_scan(self) -> bool:
        """Whether a single query's exact scan is split over :attr:`threads`."""
        return self._parallel is not None

    def search(self, query_vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-``k`` chunks for each row of ``query_vectors`` (``(q, dim)``, unit rows), best first."""
        queries = np.ascontiguousarray(query_vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (q, {self.dim}), got {query_vectors.shape}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if self.size == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        if self._parallel is not None and len(queries) < self.threads:
            scores, ids = self._parallel.search(queries, min(k, self.size))
        else:
            scores, ids = self._faiss.search(queries, min(k, self.size))
        results: list[list[Hit]] = []
        for row_scores, row_ids in zip(scores, ids):
            hits = []
            for score, i in zip(row_scores.tolist(), row_ids.tolist()):
                if i < 0:  # ANN indexes pad with -1 when they find fewer than k
                    continue
                hits.append(
                    Hit(
                        chunk_id=self._chunk_ids[i],
                        text=self._texts[i],
                        score=float(score),
                        source=self._sources[i],
                        pages=list(self._pages[i] or []),
                        headings=list(self._headings[i] or []),
                        chunk_index=int(self._chunk_index[i]),
                    )
                )
            results.append(hits)
        return results


def load_index(directory: str | Path, threads: int = 1) -> LoadedIndex:
    """Load the committed index in ``directory`` after verifying every file against its manifest.

    ``threads``: CPU threads a search may use (see :class:`LoadedIndex`).

    Raises :class:`IndexLoadError` naming the directory or file when it is missing, incomplete or corrupt.
    """
    import faiss

    directory = Path(directory)
    try:
        version = layout.current_version_dir(directory)
        manifest = verify_manifest(version, kind=layout.MANIFEST_KIND)
    except (layout.IndexLayoutError, ManifestError) as exc:
        raise IndexLoadError(f"cannot load index from {directory}: {exc}") from exc
    for name in (layout.CHUNKS_FILE, layout.FAISS_FILE):
        if name not in manifest["files"]:
            raise IndexLoadError(f"cannot load index from {directory}: manifest of {version} does not list {name}")
    try:
        table = layout.read_chunks_table(version / layout.CHUNKS_FILE)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise IndexLoadError(f"cannot read {version / layout.CHUNKS_FILE}: {exc}") from exc
    try:
        index = faiss.read_index(str(version / layout.FAISS_FILE))
    except Exception as exc:  # noqa: BLE001 - faiss raises RuntimeError with its C++ message
        raise IndexLoadError(f"cannot read {version / layout.FAISS_FILE}: {exc}") from exc
    if index.ntotal != table.num_rows:
        raise IndexLoadError(
            f"{version / layout.FAISS_FILE} holds {index.ntotal} vectors but {layout.CHUNKS_FILE} has "
            f"{table.num_rows} chunks"
        )
    meta = manifest.get("meta", {})
    if int(meta.get("dim", index.d)) != index.d:
        raise IndexLoadError(f"{version / layout.FAISS_FILE} has dim {index.d}, manifest says {meta.get('dim')}")
    _apply_search_params(index, meta.get("index_kind", "flat"), meta.get("index_params", {}))
    loaded = LoadedIndex(version, manifest, table, index, threads=threads)
    log.info(
        "event=index_loaded dir=%s version=%s chunks=%d kind=%s model=%s parallel_scan=%s",
        directory, version.name, loaded.size, loaded.kind, loaded.embedding_model, loaded.parallel_scan,
    )
    return loaded
