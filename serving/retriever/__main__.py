"""``python -m serving.retriever --index DIR --http_port PORT``: start the retriever predictor.

Arguments -> settings -> model -> ``ModelServer().start``. KServe's server flags (``--http_port``, ``--model_name``,
``--enable_grpc``, ...) are accepted as KServe defines them; gRPC is off unless ``--enable_grpc true``.

Exit codes: 2 for a configuration mistake (before the server starts), 3 when the index or embedding model fails to
load (after the server started answering not-ready). A retriever never sits not-ready forever.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import kserve
from kserve import model_server

from serving.retriever import middleware
from serving.retriever.errors import IndexLoadFailed
from serving.retriever.events import log_event
from serving.retriever.model import RetrieverModel
from serving.retriever.settings import ENV_PREFIX, SettingsError, load_settings

EXIT_CONFIG = 2
EXIT_LOAD_FAILED = 3

# CLI flag -> settings field, for error messages that name what the user typed.
_FLAGS = {
    "index_dir": "--index",
    "model_name": "--model_name",
    "default_top_k": "--default_top_k",
    "max_top_k": "--max_top_k",
    "max_queries": "--max_queries",
    "max_query_chars": "--max_query_chars",
    "max_body_bytes": "--max_body_bytes",
    "embedding_model": "--embedding_model",
    "batch_size": "--batch_size",
    "threads": "--threads",
    "query_encoder": "--query_encoder",
    "v1_fast_path": "--v1_fast_path",
}


def build_parser() -> argparse.ArgumentParser:
    """KServe's server flags plus the retriever's own (each one also settable as RAGTUNE_RETRIEVER_<FIELD>)."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.retriever",
        description="Retriever predictor: top-k chunks from a local index, over KServe V1/V2.",
        parents=[model_server.parser],
    )
    parser.add_argument("--index", dest="index_dir", help="Index directory written by `ragtune index` (required).")
    parser.add_argument("--default_top_k", type=int, help="Hits per query when the request gives none (10).")
    parser.add_argument("--max_top_k", type=int, help="Largest top_k a request may ask for (50).")
    parser.add_argument("--max_queries", type=int, help="Most queries per request (64).")
    parser.add_argument("--max_query_chars", type=int, help="Longest query in characters (4096).")
    parser.add_argument("--max_body_bytes", type=int, help="Largest request body in bytes (65536); larger: 413.")
    parser.add_argument("--embedding_model", help="Embedding model path or id (default: the one the index records).")
    parser.add_argument("--batch_size", type=int, help="Queries per embedding batch (64).")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and FAISS (default: the CPUs granted to the process, at most 8).")
    parser.add_argument("--query_encoder", choices=["auto", "onnx", "onnx-int8", "torch"],
                        help="Query encoding: ONNX Runtime, ONNX Runtime with int8 weights (faster, vectors ~0.99 "
                        "cosine to the model's), sentence-transformers (torch), or auto (ONNX if it reproduces the "
                        "model; default).")
    parser.add_argument("--v1_fast_path", help="true (default): plain JSON V1 :predict requests skip FastAPI routing "
                        "and KServe's dataplane (same answers, ~1 ms less per request); false: KServe serves all.")
    # None: not given here, so the environment or the settings default decides. Latency logging (KServe's two trace
    # lines per request) is off unless asked for: the stage histograms on /metrics carry the same figures.
    parser.set_defaults(model_name=None, enable_grpc=False, enable_latency_logging=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, start; returns only after the server stops (or on a configuration error)."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(**{field: getattr(args, field) for field in _FLAGS})
    except SettingsError as exc:
        message = str(exc)
        for field, flag in _FLAGS.items():
            message = message.replace(f"{field}: ", f"{flag} ({ENV_PREFIX}{field.upper()}): ")
        print(f"retriever: error: {message}", file=sys.stderr)
        return EXIT_CONFIG
    if args.workers != 1:
        print("retriever: error: --workers must be 1 (scale the retriever with replicas)", file=sys.stderr)
        return EXIT_CONFIG

    log_event(
        "retriever_starting",
        **{k: str(v) for k, v in settings.model_dump().items()},
        http_port=args.http_port,
        grpc=args.enable_grpc,
    )
    # Read by both OpenMP runtimes (torch's and FAISS's) when they start, so every thread, including KServe's
    # executor threads that run the searches, gets this many; set before either library is imported.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(settings.threads)
    model = RetrieverModel(settings)
    server = kserve.ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        enable_latency_logging=args.enable_latency_logging,
    )
    server.register_model(model)
    model.enable_latency_logging = server.enable_latency_logging
    middleware.install(
        model_server.app,
        max_body_bytes=settings.max_body_bytes,
        is_ready=lambda: model.ready,
        model_name=model.name,
        fast_path_model=model if settings.v1_fast_path else None,
        latency_logging=args.enable_latency_logging,
    )
    model.load_in_background(on_failure=_exit_on_load_failure)
    # The model is registered above and loads in the background, so start() gets no models to check for
    # readiness: the server answers health checks (not ready) while the index loads.
    server.start([])
    log_event("retriever_stopped", model_name=model.name)
    return 0


def _exit_on_load_failure(exc: BaseException) -> None:
    reason = str(exc) if isinstance(exc, IndexLoadFailed) else f"{type(exc).__name__}: {exc}"
    log_event("index_load_failed", level=logging.ERROR, reason=reason)
    print(f"retriever: error: {reason}", file=sys.stderr, flush=True)
    # Called from the loader thread while uvicorn owns the main thread; nothing is loaded that needs cleaning up,
    # and the process must not linger not-ready, so it ends here.
    os._exit(EXIT_LOAD_FAILED)


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Interpreter finalization (torch and tokenizer teardown) takes seconds to tens of seconds on a busy node and
    # eats into the pod's termination grace period; everything worth keeping is flushed, so skip it.
    os._exit(code)
