"""Structured one-line log events (``event=... key=value ...``) and the chat's Prometheus metrics.

Events never carry secrets or message text: only names, sizes, timings and outcomes.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram

logger = logging.getLogger("ragtune.chat")

MESSAGES = Counter("ragtune_chat_messages_total", "Chat messages answered, by outcome.", ["outcome"])
UPSTREAM_ERRORS = Counter(
    "ragtune_chat_upstream_errors_total", "Failed calls to a predictor, by service and kind.", ["service", "kind"]
)
BUSY_RETRIES = Counter("ragtune_chat_busy_retries_total", "Retries after the LLM predictor answered 429.")
EMPTY_RETRIES = Counter(
    "ragtune_chat_empty_answer_retries_total", "Greedy retries after the model sampled an empty answer."
)
TTFT = Histogram(
    "ragtune_chat_time_to_first_token_seconds",
    "From receiving a message to streaming the first answer token.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
)
RETRIEVAL = Histogram(
    "ragtune_chat_retrieval_seconds", "Retriever predictor round trip.", buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5)
)


def _fmt(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log ``event=<event> k=v ...`` on one line."""
    logger.log(level, " ".join([f"event={_fmt(event)}", *(f"{k}={_fmt(v)}" for k, v in fields.items())]))
