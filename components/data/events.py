"""One-line structured log events (``event=name key=value ...``) for the data and train components.

Values are rendered with ``repr`` only when they contain spaces or quotes, so lines stay greppable. Never pass
secrets (tokens are not logged anywhere in these components).
"""

from __future__ import annotations

import logging
from typing import Any


def _render(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    if not text or any(c in text for c in ' "\'=\n'):
        return repr(text)
    return text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` as one ``key=value`` line."""
    parts = [f"event={event}"] + [f"{k}={_render(v)}" for k, v in fields.items()]
    logger.log(level, " ".join(parts))
