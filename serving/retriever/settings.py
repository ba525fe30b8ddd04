"""Settings of the retriever predictor: one typed object, validated at start.

Values come, highest priority first, from the command line (``python -m serving.retriever --index DIR ...``), from
environment variables prefixed ``RAGTUNE_RETRIEVER_`` (``RAGTUNE_RETRIEVER_INDEX_DIR=/mnt/index``), and from the
defaults below, which are the offline ones. KServe's own server flags (``--http_port``, ``--workers``, ...) are
parsed by KServe and are not repeated here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "RAGTUNE_RETRIEVER_"
_MODEL_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def default_threads() -> int:
    """CPUs this process may use (affinity, capped by a cgroup v2 quota, i.e. a Kubernetes CPU limit), at most 8.

    torch and FAISS threads spin while they wait for each other: more threads than granted CPUs is many times
    slower, which ``os.cpu_count()`` (the node's CPUs) would give inside a limited pod.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, min(cpus, 8))


class SettingsError(ValueError):
    """The retriever's configuration is invalid; the message names the bad field."""


class RetrieverSettings(BaseSettings):
    """Everything the retriever predictor can be configured with."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    index_dir: Path = Field(
        ...,
        description="Directory holding a local index written by `ragtune index` (manifest.json, chunks, FAISS).",
    )
    model_name: str = Field(
        "retriever",
        description="Name the model is served under: /v1/models/<name>:predict and /v2/models/<name>/infer.",
    )
    default_top_k: int = Field(10, ge=1, le=1000, description="Hits returned when a query gives no top_k.")
    max_top_k: int = Field(50, ge=1, le=1000, description="Largest top_k a client may ask for; above it: HTTP 400.")
    max_queries: int = Field(64, ge=1, le=1024, description="Most queries in one request; above it: HTTP 400.")
    max_query_chars: int = Field(
        4096, ge=16, le=65536, description="Longest query string in characters; longer: HTTP 400."
    )
    max_body_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024, description="Largest request body in bytes; larger: HTTP 413."
    )
    embedding_model: str | None = Field(
        None,
        description="Embedding model path or id. Default: the model recorded in the index (it must match the "
        "index's vector width).",
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Queries encoded per embedding batch.")
    threads: int = Field(
        default_factory=default_threads,
        ge=1,
        le=256,
        description="CPU threads for the embedding model (torch) and FAISS search.",
    )
    query_encoder: Literal["auto", "onnx", "onnx-int8", "torch"] = Field(
        "auto",
        description="How queries are encoded: 'onnx' runs the embedding model exported to ONNX Runtime (2-3x faster "
        "for short queries; start-up fails if it cannot), 'onnx-int8' the same export with int8 weights (~40 % "
        "less encode time; vectors at a cosine of ~0.99 to the model's, so rankings can differ slightly), 'torch' runs "
        "sentence-transformers, 'auto' uses ONNX when the export reproduces the model's vectors and torch otherwise.",
    )
    v1_fast_path: bool = Field(
        True,
        description="Serve plain JSON V1 :predict requests from the request guard, without FastAPI routing and "
        "KServe's dataplane (~1 ms less per request on 2 cores; same answers and errors). False: KServe's stack "
        "serves every request.",
    )

    @field_validator("index_dir")
    @classmethod
    def _index_dir_exists(cls, value: Path) -> Path:
        if not value.exists():
            raise ValueError(f"index directory {value} does not exist (build one with `ragtune index`)")
        if not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value.resolve()

    @field_validator("model_name")
    @classmethod
    def _model_name_is_a_path_segment(cls, value: str) -> str:
        if not _MODEL_NAME_RE.match(value):
            raise ValueError("must be 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending alphanumeric")
        return value

    @field_validator("embedding_model")
    @classmethod
    def _embedding_model_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty; leave it unset to use the index's model")
        return value

    @model_validator(mode="after")
    def _default_within_limit(self) -> "RetrieverSettings":
        if self.default_top_k > self.max_top_k:
            raise ValueError(f"default_top_k ({self.default_top_k}) is above max_top_k ({self.max_top_k})")
        return self


def load_settings(**overrides: object) -> RetrieverSettings:
    """Build the settings from ``overrides`` (already-parsed CLI values; None means not given), env and defaults.

    Raises :class:`SettingsError` with one line per bad field, each naming it.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return RetrieverSettings(**given)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "settings"
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{field}: {message}")
        raise SettingsError("; ".join(lines)) from None
