"""Typed settings of the evaluation step and its promotion gate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from components.export.config import QUANT_FTYPES, describe_validation_error


class EvalConfigError(ValueError):
    """An evaluation setting is invalid; the message names the field."""


class EvalConfig(BaseModel):
    """Perplexity on the held-out conversations (assistant tokens only) and the gate that decides publishing."""

    model_config = ConfigDict(extra="forbid")

    max_examples: int = Field(50, ge=1, le=100_000, description="Held-out conversations to score (the first N).")
    max_length: int = Field(
        1024, ge=16, le=32768, description="Tokens per conversation; longer ones are truncated (as in training)."
    )
    repeats: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Seeded bootstrap resamples of the held-out set; the report gives their mean and spread. "
        "1 scores the set once without resampling.",
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed of the resampling (the scoring itself is exact).")
    margin: float = Field(
        0.0,
        ge=-0.99,
        le=10.0,
        description="Gate: publish only if fine-tuned perplexity <= base perplexity x (1 + margin). "
        "0.02 tolerates 2% worse; a negative margin demands an improvement.",
    )
    eval_base: bool = Field(True, description="Also score the base model (the gate needs it; without it, it passes).")
    quant_types: list[str] | None = Field(
        None, description="GGUF quantizations to score; default every quantization in the export."
    )
    n_threads: int = Field(0, ge=0, le=256, description="llama.cpp threads; 0 means one per CPU core.")

    @field_validator("quant_types")
    @classmethod
    def _known_quants(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        allowed = set(QUANT_FTYPES) | {"f16", "bf16", "f32"}
        lowered = [q.lower() for q in value]
        unknown = [q for q in lowered if q not in allowed]
        if unknown:
            raise ValueError(f"unknown quantization {unknown[0]!r}; choose from {', '.join(sorted(allowed))}")
        return lowered

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "EvalConfig":
        """Validate a plain dict (from YAML or a pipeline parameter); errors name the bad field."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise EvalConfigError(describe_validation_error(exc, prefix="evaluate")) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
