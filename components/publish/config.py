"""Typed settings of the publish step: model store (local folder/PVC or Hub) and model catalog."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.export.config import QUANT_FTYPES, describe_validation_error
from serving.llm.catalog import MODEL_NAME_PATTERN


class PublishConfigError(ValueError):
    """A publish setting is invalid; the message names the field."""


class PublishConfig(BaseModel):
    """Where published models go and how they appear in the catalog the LLM predictor reads."""

    model_config = ConfigDict(extra="forbid")

    store: Literal["local", "hub"] = Field(
        "local", description="Model store: 'local' (a folder or mounted PVC) or 'hub' (a Hugging Face repo)."
    )
    store_dir: str = Field(
        ".ragtune/models", min_length=1, description="Local store root; the model goes to STORE_DIR/<model name>/."
    )
    catalog_path: str = Field(
        ".ragtune/catalog.yaml", min_length=1, description="Model catalog file (YAML or .json) to add entries to."
    )
    model_name: str | None = Field(
        None, pattern=MODEL_NAME_PATTERN, description="Catalog name of the model; default the export's model id."
    )
    quant_types: list[str] = Field(
        default_factory=lambda: ["q4_k_m"],
        min_length=1,
        description="Quantizations that get a catalog entry. The first is registered as MODEL_NAME, "
        "each other one as MODEL_NAME-<quant>.",
    )
    include_unquantized: bool = Field(
        False, description="Also copy the unquantized (f16) GGUF to the store."
    )
    context_size: int = Field(2048, ge=128, le=131072, description="Context window the predictor runs the model with.")
    description: str = Field("", max_length=500, description="Catalog description; default names base and quant.")
    tags: list[str] = Field(default_factory=lambda: ["fine-tuned"], description="Catalog tags.")
    hub_repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hub repo id (namespace/name) when store is 'hub'."
    )
    hub_private: bool = Field(True, description="Create the Hub repo as private.")

    @field_validator("quant_types")
    @classmethod
    def _known_quants(cls, value: list[str]) -> list[str]:
        allowed = set(QUANT_FTYPES) | {"f16", "bf16", "f32"}
        lowered = [q.lower() for q in value]
        unknown = [q for q in lowered if q not in allowed]
        if unknown:
            raise ValueError(f"unknown quantization {unknown[0]!r}; choose from {', '.join(sorted(allowed))}")
        if len(set(lowered)) != len(lowered):
            raise ValueError("each quantization may appear once")
        return lowered

    @model_validator(mode="after")
    def _hub_needs_repo(self) -> "PublishConfig":
        if self.store == "hub" and not self.hub_repo:
            raise ValueError("hub_repo is required when store is 'hub'")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "PublishConfig":
        """Validate a plain dict (from YAML or a pipeline parameter); errors name the bad field."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise PublishConfigError(describe_validation_error(exc, prefix="publish")) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
