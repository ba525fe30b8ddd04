"""Structured events of the retriever: one JSON object per line on stderr.

``log_event("index_loaded", chunks=1200, load_s=2.1)`` writes
``{"ts": "...", "level": "info", "logger": "ragtune.retriever", "event": "index_loaded", "chunks": 1200, ...}``.
Queries are never logged (they may hold user data); only their count and sizes are.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys

LOGGER_NAME = "ragtune.retriever"


class _JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str, ensure_ascii=False)


def _logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_JsonLineFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # KServe configures the root and its own loggers; ours keeps its one-line JSON format.
        logger.propagate = False
    return logger


def log_event(event: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Write one structured event line."""
    logger = _logger()
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})
        for handler in logger.handlers:
            handler.flush()
