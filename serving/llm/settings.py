"""The LLM predictor's settings: one typed object, from defaults < environment (``RAGTUNE_LLM_*``) < command line.

Every field is described and bounded; :func:`settings_from_argv` validates them at start and turns a bad value into
one line naming the field, never a stack trace.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.llm.catalog import MODEL_NAME_PATTERN

DEFAULT_CATALOG = Path(__file__).resolve().parent / "default_catalog.yaml"
_NAME_RE = re.compile(MODEL_NAME_PATTERN)


def _default_threads() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a Kubernetes CPU limit).

    llama.cpp threads spin while they wait for each other, so more threads than granted CPUs is much slower.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class LLMSettings(BaseSettings):
    """Settings of ``python -m serving.llm``; env vars are the upper-case field names prefixed ``RAGTUNE_LLM_``."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_LLM_", extra="forbid", validate_default=True)

    catalog: Path = Field(DEFAULT_CATALOG, description="Model catalog (YAML or JSON) listing the servable models.")
    http_port: int = Field(
        8080, ge=1, le=65535, description="HTTP port for the OpenAI, V1, V2, health and metrics routes."
    )
    preload: str = Field(
        "*",
        description="Models loaded at start, before the server reports ready: '*' (all that fit the memory budget), "
        "'none', or comma-separated catalog names. Others load on first use.",
    )
    memory_budget_mb: int = Field(
        4096, ge=16, le=1_048_576, description="Loaded models may use this much (GGUF size); above it the LRU unloads."
    )
    n_threads: int = Field(
        default_factory=_default_threads, ge=1, le=512, description="llama.cpp threads per generation."
    )
    n_batch: int = Field(512, ge=8, le=8192, description="Prompt tokens evaluated per llama.cpp batch.")
    reuse_prompt_prefix: bool = Field(
        False,
        description="Keep the KV cache of a prompt prefix shared with the previous request (faster growing chats); "
        "off by default because a seeded sample is then no longer repeatable.",
    )
    max_queue: int = Field(8, ge=0, le=1024, description="Requests that may wait for the model; past it: 429.")
    queue_timeout_s: float = Field(60.0, gt=0, le=3600, description="Longest wait in the queue before a 503.")
    generation_timeout_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="Per-request generation time limit; the answer ends with finish_reason 'length'.",
    )
    max_tokens_cap: int = Field(2048, ge=1, le=131072, description="Largest max_tokens a request may ask for.")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=64 << 20, description="Largest request body; past it: 413.")
    api_key: SecretStr | None = Field(
        None, description="When set, inference routes need 'Authorization: Bearer <key>'; health stays open."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the JSON event log."
    )

    @field_validator("preload")
    @classmethod
    def _preload_names(cls, value: str) -> str:
        value = value.strip()
        if value in ("*", "none", ""):
            return value or "none"
        for name in (n.strip() for n in value.split(",")):
            if not _NAME_RE.match(name):
                raise ValueError(f"{name!r} is not a catalog model name (pattern {MODEL_NAME_PATTERN})")
        return value

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        return value

    def preload_names(self, catalog_names: list[str]) -> list[str] | Literal["*"]:
        """The names to preload: '*' for all (that fit), else the listed names, which must be in the catalog."""
        if self.preload == "*":
            return "*"
        if self.preload == "none":
            return []
        names = [n.strip() for n in self.preload.split(",")]
        unknown = [n for n in names if n not in catalog_names]
        if unknown:
            raise SettingsError(
                f"--preload: {', '.join(unknown)} not in the catalog (known: {', '.join(catalog_names)})"
            )
        return names


class SettingsError(ValueError):
    """A setting is invalid; the message names the field."""


def build_arg_parser() -> argparse.ArgumentParser:
    """One ``--field`` option per settings field, help text from its description."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.llm",
        description="Serve GGUF models from a catalog with llama.cpp: OpenAI-compatible, KServe V1/V2, on CPU.",
        allow_abbrev=False,
    )
    for name, field in LLMSettings.model_fields.items():
        parser.add_argument(
            f"--{name}", dest=name, default=argparse.SUPPRESS, metavar=name.upper(), help=field.description
        )
    return parser


def settings_from_argv(argv: list[str] | None = None) -> LLMSettings:
    """Parse the command line over the environment; raise :class:`SettingsError` naming the bad field."""
    args = vars(build_arg_parser().parse_args(argv))
    try:
        return LLMSettings(**args)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(settings)"
            parts.append(f"--{loc} (env RAGTUNE_LLM_{loc.upper()}): {err['msg']}")
        raise SettingsError("; ".join(parts)) from None
