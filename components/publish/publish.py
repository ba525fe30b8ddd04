"""The publish step: GGUF files + manifest (with eval results) into the model store, entries into the catalog."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.export.gguf_export import ExportResult, load_export
from components.manifest import read_manifest, write_manifest
from components.publish.config import PublishConfig
from serving.llm.catalog import Catalog, CatalogEntry, entry_from_dict

log = logging.getLogger("ragtune.publish")

MODEL_KIND = "gguf-model"


class PublishError(RuntimeError):
    """The export or report is missing or invalid, or the store cannot be written."""


@dataclass
class PublishResult:
    """Where the model went and which catalog entries now point at it."""

    model_dir: str | None
    hub_repo: str | None
    hub_commit: str | None
    catalog_path: str
    entries: list[str] = field(default_factory=list)


def _entry_name(base: str, quant: str, first: bool) -> str:
    return base if first else f"{base}-{quant}"


def publish(cfg: PublishConfig, export_dir: str | os.PathLike[str], report: dict[str, Any] | None = None, *,
            hub_api: Any = None) -> PublishResult:
    """Copy the export's GGUF files to the store, write its manifest there, and upsert catalog entries.

    Args:
        cfg: publish settings.
        export_dir: the export step's output (its manifest is verified before anything is copied).
        report: the evaluation report (``report.json`` as a dict); its metrics go into the manifest and catalog.
        hub_api: an ``huggingface_hub.HfApi``-like client for the 'hub' store (default: a real ``HfApi``).
    """
    export = load_export(export_dir)
    name = cfg.model_name or export.model_id
    missing = [q for q in cfg.quant_types if q not in {f.quant for f in export.files}]
    if missing:
        raise PublishError(f"publish.quant_types: the export has no {missing[0]!r} GGUF "
                           f"(it has {', '.join(f.quant for f in export.files)})")
    keep = [f for f in export.files if f.quant in cfg.quant_types or (cfg.include_unquantized and f.quant in
                                                                          {"f16", "bf16", "f32"})]
    metrics = (report or {}).get("metrics", {})
    meta = {
        "model_id": name,
        "base_model": export.base_model,
        "quant_types": [f.quant for f in keep],
        "gguf": {f.quant: {"file": f.file, "size": f.size} for f in keep},
        "chat_template": export.chat_template,
        "eval": report or {},
    }
    catalog_path = Path(cfg.catalog_path)
    if cfg.store == "local":
        model_dir = Path(cfg.store_dir) / name
        _replace_dir(model_dir, export, keep, meta)
        result = PublishResult(str(model_dir), None, None, str(catalog_path))
        sources = {f.quant: {"path": os.path.relpath(model_dir.resolve() / f.file, catalog_path.resolve().parent)}
                   for f in keep}
    else:
        from components.export.hub import push_folder

        with tempfile.TemporaryDirectory(prefix="ragtune-publish-") as staging:
            stage = Path(staging) / name
            _replace_dir(stage, export, keep, meta)
            commit = push_folder(stage, cfg.hub_repo, private=cfg.hub_private, api=hub_api,  # type: ignore[arg-type]
                                 commit_message=f"ragtune: publish {name}")
        result = PublishResult(None, cfg.hub_repo, commit, str(catalog_path))
        sources = {f.quant: {"hf_repo": cfg.hub_repo, "hf_file": f.file, "revision": commit} for f in keep}

    recorded = read_manifest(export_dir)["files"]  # verified by load_export above
    sha = {f.quant: recorded[f.file]["sha256"] for f in keep}
    catalog = Catalog.load_or_empty(catalog_path)
    for i, quant in enumerate(cfg.quant_types):
        entry: CatalogEntry = entry_from_dict({
            "name": _entry_name(name, quant, i == 0),
            "description": cfg.description or f"{name} ({quant}), fine-tuned from {export.base_model or 'unknown'}",
            "source": sources[quant],
            "quantization": quant,
            "context_size": cfg.context_size,
            "sha256": sha[quant],
            "base_model": export.base_model,
            "chat_template": None,
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "tags": list(cfg.tags),
        })
        catalog.upsert(entry)
        result.entries.append(entry.name)
    catalog.save(catalog_path)
    log.info("event=published store=%s model=%s entries=%s catalog=%s", cfg.store, name,
             ",".join(result.entries), catalog_path)
    return result


def _replace_dir(target: Path, export: ExportResult, keep: list, meta: dict[str, Any]) -> None:
    """Build the model folder beside ``target`` and swap it in, so a reader never sees half a model."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for f in keep:
            shutil.copy2(Path(export.out_dir) / f.file, tmp / f.file)
        write_manifest(tmp, [f.file for f in keep], kind=MODEL_KIND, meta=meta)
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
