"""Container images the pipeline components run in, from a configurable registry and tag.

Components read this at definition time, so set ``RAGTUNE_REGISTRY`` / ``RAGTUNE_IMAGE_TAG`` before importing the
pipelines (``make compile REGISTRY=... TAG=...`` does). The image names match the Dockerfiles under ``docker/``.
"""

from __future__ import annotations

import os

DEFAULT_REGISTRY = "ghcr.io/ragtune"
DEFAULT_TAG = "0.1.0"

#: role -> image name (one image per role, built by ``make images``)
ROLES = {
    "components": "ragtune-components",  # CPU: index, data, export, evaluate, publish
    "train": "ragtune-train",  # CUDA: unsloth, bitsandbytes, trl, peft
    "llm": "ragtune-llm",
    "retriever": "ragtune-retriever",
    "frontend": "ragtune-frontend",
}


def registry() -> str:
    return os.environ.get("RAGTUNE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")


def tag() -> str:
    return os.environ.get("RAGTUNE_IMAGE_TAG", DEFAULT_TAG)


def image(role: str) -> str:
    """Full image reference for ``role`` (one of :data:`ROLES`)."""
    if role not in ROLES:
        raise KeyError(f"unknown image role {role!r}; known: {', '.join(ROLES)}")
    return f"{registry()}/{ROLES[role]}:{tag()}"
