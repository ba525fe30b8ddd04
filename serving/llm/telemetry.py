"""Prometheus metrics (served on KServe's ``/metrics``) and the one-line JSON event log of the LLM predictor.

Model labels only ever take catalog names (an unknown name is counted as ``-``), so a client cannot blow up the
label cardinality. Events carry counts and timings, never prompts, completions or keys.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "ragtune_llm_requests_total", "Requests by endpoint, model and HTTP status.", ["endpoint", "model", "status"]
)
GENERATIONS = Counter(
    "ragtune_llm_generations_total", "Finished generations by model and finish reason.", ["model", "finish_reason"]
)
PROMPT_TOKENS = Counter("ragtune_llm_prompt_tokens_total", "Prompt tokens processed.", ["model"])
GENERATED_TOKENS = Counter("ragtune_llm_generated_tokens_total", "Completion tokens generated.", ["model"])
TIME_TO_FIRST_TOKEN = Histogram(
    "ragtune_llm_time_to_first_token_seconds",
    "From request arrival to the first generated token (queue wait + model load + prompt evaluation).",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DECODE_RATE = Histogram(
    "ragtune_llm_tokens_per_second",
    "Decode speed of one generation (tokens after the first / their time).",
    ["model"],
    buckets=(1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400, 1000),
)
CANCEL_LATENCY = Histogram(
    "ragtune_llm_cancel_seconds",
    "From a cancel (client disconnect) to the model being free for the next request.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
QUEUE_DEPTH = Gauge("ragtune_llm_queue_depth", "Requests waiting for the model (not counting the running one).")
ACTIVE = Gauge("ragtune_llm_active_generations", "Generations running now (0 or 1 per process).")
LOADED_MODELS = Gauge("ragtune_llm_loaded_models", "Models held in memory.")
LOADED_BYTES = Gauge("ragtune_llm_loaded_model_bytes", "GGUF bytes of the models held in memory.")
MODEL_LOADS = Counter("ragtune_llm_model_loads_total", "Model loads (preload or first use).", ["model"])
MODEL_UNLOADS = Counter("ragtune_llm_model_unloads_total", "Models unloaded by the LRU to stay in budget.", ["model"])

_LOGGER = logging.getLogger("ragtune.llm")


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO") -> None:
    """Send ``ragtune.llm`` events to stderr as JSON lines (idempotent)."""
    if not any(isinstance(h.formatter, _JsonLines) for h in _LOGGER.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLines())
        _LOGGER.addHandler(handler)
    _LOGGER.setLevel(level)
    _LOGGER.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as a single JSON line: ``{"ts", "level", "event", **fields}``."""
    _LOGGER.log(level, event, extra={"fields": fields})
