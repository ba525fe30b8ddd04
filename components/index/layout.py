"""The on-disk format of a local index directory (what ``ragtune index --out DIR`` leaves, and the retriever loads).

::

    DIR/
      CURRENT                    one line: "versions/<version>" -- the committed version
      versions/<version>/
        chunks.parquet           one row per chunk: metadata, text, and the embedding (float32[dim])
        index.faiss              the FAISS search index over the embeddings, row i = chunk i
        manifest.json            sha256 of both files + meta (embedding model, dim, count, index kind, documents)

A writer builds a new version in a hidden temporary folder, renames it into ``versions/`` and then replaces
``CURRENT`` atomically (write-to-temp + ``os.replace``). A reader resolves ``CURRENT`` once, so a writer killed at any
moment leaves the previously committed version in place and loadable. A directory holding ``manifest.json`` directly
(a single version copied elsewhere) is accepted as well.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.manifest import MANIFEST_NAME

CURRENT_NAME = "CURRENT"
VERSIONS_DIR = "versions"
CHUNKS_FILE = "chunks.parquet"
FAISS_FILE = "index.faiss"
LOCK_FILE = ".lock"
MANIFEST_KIND = "index"
#: versions kept after a commit (the committed one + its predecessor, for readers that resolved CURRENT just before)
KEEP_VERSIONS = 2


class IndexLayoutError(RuntimeError):
    """The directory is not a committed index (no CURRENT pointer, or it points nowhere)."""


def current_version_dir(directory: str | Path) -> Path:
    """The folder of the committed version in ``directory``.

    Raises :class:`IndexLayoutError` naming the directory when nothing was committed there.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IndexLayoutError(f"index directory {directory} does not exist")
    pointer = directory / CURRENT_NAME
    if pointer.is_file():
        rel = pointer.read_text(encoding="utf-8").strip()
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise IndexLayoutError(f"{pointer} holds {rel!r}, not a version folder name")
        version = directory / rel
        if not version.is_dir():
            raise IndexLayoutError(f"{pointer} points to {rel!r}, which does not exist in {directory}")
        return version
    if (directory / MANIFEST_NAME).is_file():
        return directory
    raise IndexLayoutError(f"{directory} holds no index (no {CURRENT_NAME} pointer and no {MANIFEST_NAME})")


def chunk_schema(dim: int) -> pa.Schema:
    """Arrow schema of ``chunks.parquet`` for embeddings of width ``dim``."""
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("doc_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("contextualized_text", pa.string(), nullable=False),
            pa.field("pages", pa.list_(pa.int32())),
            pa.field("headings", pa.list_(pa.string())),
            pa.field("chunk_index", pa.int32(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
        ]
    )


def embeddings_from_column(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """Turn a fixed-size-list embedding column into a contiguous ``(n, dim)`` float32 array (no per-row Python)."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, dim), dtype=np.float32)
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values.reshape(len(array), dim), dtype=np.float32)


def read_chunks_table(path: str | Path) -> pa.Table:
    """Read ``chunks.parquet`` (memory-mapped)."""
    return pq.read_table(path, memory_map=True)
