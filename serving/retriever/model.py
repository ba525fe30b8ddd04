"""The retriever as a KServe model: it loads a local index and answers top-k chunk queries.

``load`` verifies and opens the index (components.index.search.load_index checks the sha256 manifest) and the
embedding model that built it; ``preprocess`` validates a V1 or V2 request into queries; ``predict`` encodes the
queries in one batch and searches the FAISS index; the response keeps the request's protocol.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from kserve import InferRequest, InferResponse, Model
from prometheus_client import Counter, Gauge, Histogram

from serving.retriever.errors import IndexLoadFailed, InvalidRequest
from serving.retriever.events import log_event
from serving.retriever.protocol import Limits, Query, parse_v1, parse_v2, v1_response, v2_response
from serving.retriever.settings import RetrieverSettings

QUERIES = Counter("ragtune_retriever_queries", "Queries answered by the retriever", ["model_name", "protocol"])
STAGE_SECONDS = Histogram(
    "ragtune_retriever_stage_seconds",
    "Time per request in each retrieval stage",
    ["model_name", "stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
INDEX_CHUNKS = Gauge("ragtune_retriever_index_chunks", "Chunks in the loaded index", ["model_name"])
_thread_state = threading.local()
READY = Gauge("ragtune_retriever_ready", "1 once the index is loaded and the model serves", ["model_name"])


class _Batch:
    """Queries of one request, tagged with the protocol they came in."""

    def __init__(self, queries: list[Query], v2_request: InferRequest | None):
        self.queries = queries
        self.v2_request = v2_request


class RetrieverModel(Model):
    """Top-k chunk retrieval over a local FAISS index, served by KServe."""

    def __init__(self, settings: RetrieverSettings):
        super().__init__(settings.model_name)
        self.settings = settings
        self.limits = Limits(
            default_top_k=settings.default_top_k,
            max_top_k=settings.max_top_k,
            max_queries=settings.max_queries,
            max_query_chars=settings.max_query_chars,
        )
        self.index: Any = None
        self.embedder: Any = None
        self.encoder: Any = None  # what encodes queries: an OnnxEncoder, or the embedder itself
        self.load_error: BaseException | None = None
        self.ready = False
        READY.labels(model_name=self.name).set(0)

    def load(self) -> bool:
        """Verify and load the index and its embedding model; set ``ready``.

        Raises :class:`IndexLoadFailed` with a one-line reason when the index is missing or corrupt, or the
        embedding model cannot be loaded or does not fit the index.
        """
        start = time.perf_counter()
        import faiss

        # The index is opened (and its manifest verified) before torch is imported, so a corrupt index fails fast.
        from components.index.search import IndexLoadError, load_index

        faiss.omp_set_num_threads(self.settings.threads)
        log_event("index_loading", index_dir=str(self.settings.index_dir), model_name=self.name)
        try:
            index = load_index(self.settings.index_dir, threads=self.settings.threads)
        except IndexLoadError as exc:
            raise IndexLoadFailed(f"cannot load the index in {self.settings.index_dir}: {exc}") from exc

        import torch

        from components.index.embed import Embedder

        torch.set_num_threads(self.settings.threads)
        model_id = self._embedding_model_for(index.embedding_model)
        try:
            embedder = Embedder(model_id, batch_size=self.settings.batch_size, device="cpu")
        except Exception as exc:  # whatever the loader raises, the message must say which model failed
            raise IndexLoadFailed(f"cannot load the embedding model {model_id!r}: {exc}") from exc
        if embedder.dim != index.dim:
            raise IndexLoadFailed(
                f"embedding model {embedder.model_name!r} gives {embedder.dim}-d vectors but the index in "
                f"{self.settings.index_dir} holds {index.dim}-d vectors (built with {index.embedding_model!r})"
            )
        encoder = self._query_encoder_for(embedder)
        # One encode before ready, so the first client request does not pay for lazy initialisation.
        encoder.encode(["warm-up"])
        self.index, self.embedder, self.encoder = index, embedder, encoder
        self.ready = True
        INDEX_CHUNKS.labels(model_name=self.name).set(index.size)
        READY.labels(model_name=self.name).set(1)
        log_event(
            "index_loaded",
            model_name=self.name,
            index_dir=str(self.settings.index_dir),
            chunks=index.size,
            dim=index.dim,
            embedding_model=embedder.model_name,
            query_encoder=type(encoder).__name__,
            query_weights="int8" if getattr(encoder, "int8", False) else "float32",
            threads=self.settings.threads,
            parallel_scan=index.parallel_scan,
            load_s=round(time.perf_counter() - start, 3),
        )
        return self.ready

    def load_in_background(self, on_failure) -> threading.Thread:
        """Run :meth:`load` in a thread; call ``on_failure(exc)`` if it fails.

        The server starts answering health checks at once and reports not-ready until the load finishes, so a
        large index never looks like a dead pod.
        """

        def run() -> None:
            try:
                self.load()
            except BaseException as exc:  # every load failure must end the process, whatever its type
                self.load_error = exc
                on_failure(exc)

        thread = threading.Thread(target=run, name="retriever-load", daemon=True)
        thread.start()
        return thread

    async def preprocess(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> _Batch:
        """Validate the request into queries (400 naming the field on any mistake)."""
        if isinstance(payload, InferRequest):
            return _Batch(parse_v2(payload, self.limits), payload)
        if isinstance(payload, (bytes, str)):
            raise InvalidRequest("body", "must be JSON (content-type application/json)")
        return _Batch(parse_v1(payload, self.limits), None)

    def validate(self, payload: Any) -> Any:
        # The queries were validated in preprocess; KServe's generic check expects the raw dict.
        return payload

    async def predict(
        self, payload: _Batch, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> dict | InferResponse:
        """Encode the queries and return each one's top-k hits, in the request's protocol."""
        if len(payload.queries) == 1:
            # One query takes 10-30 ms and its encoder already uses every granted core, so running it in a thread
            # would not let anything else progress, and the two thread hand-offs cost ~0.4 ms on a 2-core node.
            results = self.search(payload.queries)
        else:
            # A batch can take much longer; off the event loop, health checks and metrics stay answered meanwhile.
            results = await asyncio.get_running_loop().run_in_executor(None, self.search, payload.queries)
        protocol = "v2" if payload.v2_request is not None else "v1"
        QUERIES.labels(model_name=self.name, protocol=protocol).inc(len(payload.queries))
        if payload.v2_request is not None:
            return v2_response(payload.v2_request, self.name, payload.queries, results)
        return v1_response(payload.queries, results)

    def search(self, queries: Sequence[Query]) -> list[list[Any]]:
        """Encode ``queries`` in one batch and search the index; hits per query, best first."""
        if not self.ready:
            raise RuntimeError("the retriever is not loaded")
        # FAISS parallelises a search over queries: a batch gets one OpenMP thread per query up to the granted
        # threads; a single query's flat scan is split over threads by LoadedIndex itself. omp_set_num_threads is per
        # calling thread, so set it on this one.
        threads = min(self.settings.threads, len(queries))
        if getattr(_thread_state, "omp_threads", None) != threads:
            import faiss

            faiss.omp_set_num_threads(threads)
            _thread_state.omp_threads = threads
        t0 = time.perf_counter()
        vectors = self.encoder.encode([q.text for q in queries])
        t1 = time.perf_counter()
        largest = max(q.top_k for q in queries)
        hits = self.index.search(vectors, largest)
        t2 = time.perf_counter()
        STAGE_SECONDS.labels(model_name=self.name, stage="encode").observe(t1 - t0)
        STAGE_SECONDS.labels(model_name=self.name, stage="search").observe(t2 - t1)
        return [list(found[: q.top_k]) for q, found in zip(queries, hits)]

    def _query_encoder_for(self, embedder: Any) -> Any:
        """The ONNX Runtime encoder (``query_encoder`` onnx/onnx-int8/auto) or the embedder itself (torch, or auto's
        fallback)."""
        mode = self.settings.query_encoder
        if mode == "torch":
            return embedder
        from components.index.onnx_encoder import OnnxEncoder, OnnxEncoderUnavailable

        try:
            return OnnxEncoder.from_embedder(embedder, threads=self.settings.threads, int8=mode == "onnx-int8")
        except OnnxEncoderUnavailable as exc:
            if mode != "auto":
                raise IndexLoadFailed(f"--query_encoder {mode}: {exc}") from exc
            log_event("query_encoder_fallback", model_name=self.name, encoder="torch", reason=str(exc))
            return embedder

    def _embedding_model_for(self, recorded: str) -> str | None:
        """The embedding model to load: the configured one, else the one the index records.

        An index built elsewhere records a path that may not exist here; when that path is the packaged default
        model's (same package folder and model folder), the local copy of the default is used, so an index moves
        between machines and images.
        """
        from components.index.embed import default_embedding_model

        if self.settings.embedding_model:
            return self.settings.embedding_model
        if not recorded or Path(recorded).exists():
            return recorded or None
        default = default_embedding_model()
        if Path(recorded).parts[-2:] == Path(default).parts[-2:]:
            return default
        return recorded
