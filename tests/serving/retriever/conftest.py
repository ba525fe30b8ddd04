"""Fixtures: a real index built with the real embedder and local store, and the retriever as a real server.

The index is small hand-written text on distinct topics (so relevance can be asserted) with pages and headings.
The server is started once per session on a free port; while it loads, the fixture records what the health and
readiness endpoints answered, for the readiness tests.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerProcess, free_port, python_module

#: (source, page, heading, text): a tiny corpus, one topic per document.
CORPUS = [
    ("guides/lora.md", 1, "Low-rank adaptation",
     "LoRA fine-tunes a large language model by training small low-rank adapter matrices while the base weights "
     "stay frozen, which cuts the memory needed for training."),
    ("guides/lora.md", 2, "Merging adapters",
     "After training, the LoRA adapter weights can be merged into the base model so inference needs no extra layers."),
    ("guides/faiss.pdf", 3, "Vector search",
     "FAISS searches dense vectors; IndexFlatIP computes exact inner products, which equal cosine similarity for "
     "L2-normalized embeddings."),
    ("guides/faiss.pdf", 4, "Approximate indexes",
     "HNSW builds a navigable small-world graph for approximate nearest neighbour search with high recall."),
    ("guides/kubernetes.html", 1, "Pods",
     "A Kubernetes pod is the smallest deployable unit; readiness probes keep traffic away until the container is "
     "ready to serve."),
    ("guides/kubernetes.html", 2, "Autoscaling",
     "The horizontal pod autoscaler adds replicas when CPU utilisation rises above its target."),
    ("recipes/bread.md", 1, "Sourdough",
     "Sourdough bread rises with a wild yeast starter; feed the starter flour and water the day before baking."),
    ("recipes/bread.md", 2, "Baking",
     "Bake the loaf in a preheated Dutch oven at 250 degrees Celsius for twenty minutes with the lid on."),
]


def build_index(directory: Path) -> int:
    """Embed CORPUS with the real embedder and commit it with the real local store; returns the chunk count."""
    from components.index.embed import Embedder
    from components.index.store import Chunk, LocalEmbeddingStore, chunk_ids_for, document_id

    embedder = Embedder()
    chunks = []
    by_source: dict[str, list[tuple[int, str, str]]] = {}
    for source, page, heading, text in CORPUS:
        by_source.setdefault(source, []).append((page, heading, text))
    for source, rows in by_source.items():
        doc = document_id(source)
        contextual = [f"{heading}\n{text}" for _, heading, text in rows]
        for i, ((page, heading, text), cid) in enumerate(zip(rows, chunk_ids_for(doc, contextual))):
            chunks.append(
                Chunk(chunk_id=cid, doc_id=doc, source=source, text=text, contextualized_text=contextual[i],
                      pages=[page], headings=[heading], chunk_index=i)
            )
    vectors = embedder.encode([c.contextualized_text for c in chunks])
    LocalEmbeddingStore(directory, embedding_model=embedder.model_name).upsert(chunks, vectors)
    return len(chunks)


@pytest.fixture(scope="session")
def sample_index(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("retriever-index")
    assert build_index(directory) == len(CORPUS)
    return directory


@pytest.fixture(scope="session")
def corrupt_index(sample_index, tmp_path_factory) -> Path:
    """A copy of the sample index with one byte of the chunk file changed (same size, other sha256)."""
    from components.index import layout

    directory = tmp_path_factory.mktemp("corrupt") / "index"
    shutil.copytree(sample_index, directory)
    chunks = layout.current_version_dir(directory) / layout.CHUNKS_FILE
    data = bytearray(chunks.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunks.write_bytes(bytes(data))
    return directory


@dataclass
class Retriever:
    """A running retriever server and what its endpoints answered while it loaded."""

    server: ServerProcess
    url: str
    while_loading: dict[str, list[int]] = field(default_factory=dict)
    predict_while_loading: int | None = None


LOADING_PROBES = ("/v2/health/live", "/v2/health/ready", "/v2/models/retriever/ready", "/v1/models/retriever")


@pytest.fixture(scope="session")
def retriever(sample_index) -> Retriever:
    port = free_port()
    server = ServerProcess(
        # One thread: on a busy 2-core runner, spinning torch/FAISS threads make each query seconds slower.
        python_module("serving.retriever", "--index", str(sample_index), "--http_port", str(port), "--threads", "1"),
        port=port,
    ).start()
    try:
        record = Retriever(server=server, url=server.url, while_loading={p: [] for p in LOADING_PROBES})
        deadline = time.monotonic() + 180
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            # Wait for the HTTP server, then probe every endpoint until the model reports ready.
            server.wait_ready("/v2/health/live", timeout=120)
            while time.monotonic() < deadline:
                statuses = {p: client.get(p).status_code for p in LOADING_PROBES}
                for path, status in statuses.items():
                    record.while_loading[path].append(status)
                if record.predict_while_loading is None and statuses["/v2/health/ready"] != 200:
                    record.predict_while_loading = client.post(
                        "/v1/models/retriever:predict", json={"instances": [{"query": "pods"}]}
                    ).status_code
                if all(s == 200 for s in statuses.values()):
                    break
                if server.proc.poll() is not None:
                    raise RuntimeError(f"retriever exited with {server.proc.returncode}:\n{server.log()[-4000:]}")
                time.sleep(0.1)
            else:
                raise TimeoutError(f"retriever not ready after 180 s:\n{server.log()[-4000:]}")
        yield record
    finally:
        server.stop()
