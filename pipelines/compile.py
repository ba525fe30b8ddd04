"""Compile the index and fine-tuning pipelines to KFP IR YAML for upload in the Kubeflow Pipelines UI.

    python -m pipelines.compile --out pipelines/compiled [--registry REG] [--tag TAG] [--only index]
                                [--finetune-config FILE]
    ragtune compile --out pipelines/compiled            # the same, through the ragtune command
    make compile REGISTRY=registry.example.com/ml TAG=0.2.0

Components pick their container image when their module is imported (``pipelines.images`` reads RAGTUNE_REGISTRY /
RAGTUNE_IMAGE_TAG), so this sets both before importing any pipeline and then checks that every task in the written
YAML really runs an image from the requested registry and tag.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: pipeline name -> (module, attribute): a @dsl.pipeline, or a function building one from an optional config.
#: The YAML is written as <name>_pipeline.yaml.
PIPELINES: dict[str, tuple[str, str]] = {
    "index": ("pipelines.index", "index_pipeline"),
    "finetune": ("pipelines.finetune", "build_pipeline"),
}

_REGISTRY_PATTERN = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$"
_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


class CompileSettings(BaseModel):
    """What to compile, where to, and which images the tasks run in."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(Path("pipelines/compiled"), description="Directory the pipeline YAML files are written to.")
    registry: str = Field(
        default_factory=lambda: os.environ.get("RAGTUNE_REGISTRY", "ghcr.io/ragtune"),
        pattern=_REGISTRY_PATTERN,
        max_length=255,
        description="Registry (and path) of the component images, e.g. registry.example.com/ml.",
    )
    tag: str = Field(
        default_factory=lambda: os.environ.get("RAGTUNE_IMAGE_TAG", "0.1.0"),
        pattern=_TAG_PATTERN,
        description="Tag of the component images (an exact tag such as 0.1.0).",
    )
    only: list[str] = Field(default_factory=lambda: list(PIPELINES), min_length=1,
                            description="Pipelines to compile: any of index, finetune.")
    finetune_config: Path | None = Field(
        None, description="Fine-tuning config YAML (data source, placement: GPU node label, Secret, PVC) whose values "
        "become the compiled pipeline's defaults; default: the built-in defaults.")


class CompileError(RuntimeError):
    """A pipeline could not be imported or compiled, or its YAML names an image outside the requested registry."""


def compile_pipelines(settings: CompileSettings) -> list[Path]:
    """Compile the selected pipelines into ``settings.out``; returns the written files."""
    unknown = [name for name in settings.only if name not in PIPELINES]
    if unknown:
        raise CompileError(f"only: unknown pipeline(s) {', '.join(unknown)}; choose from {', '.join(PIPELINES)}")
    os.environ["RAGTUNE_REGISTRY"] = settings.registry
    os.environ["RAGTUNE_IMAGE_TAG"] = settings.tag
    from kfp import compiler  # imported here: `ragtune --help` must not pay for kfp

    settings.out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in settings.only:
        pipeline = _load_pipeline(name, settings)
        path = settings.out / f"{name}_pipeline.yaml"
        tmp = settings.out / f".{name}_pipeline.partial.yaml"
        compiler.Compiler().compile(pipeline_func=pipeline, package_path=str(tmp))
        wrong = [image for image in task_images(tmp) if not image.startswith(f"{settings.registry}/")
                 or not image.endswith(f":{settings.tag}")]
        if wrong:
            tmp.unlink()
            raise CompileError(
                f"{name}: tasks run images outside registry={settings.registry} tag={settings.tag}: {sorted(set(wrong))}"
                " (was the pipeline module imported before the registry was set?)"
            )
        os.replace(tmp, path)
        written.append(path)
        print(json.dumps({"event": "compiled", "pipeline": name, "file": str(path)}))
    return written


def _load_pipeline(name: str, settings: CompileSettings) -> Any:
    module_name, attribute = PIPELINES[name]
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise CompileError(f"cannot import {module_name}.{attribute}: {exc}") from exc
    if hasattr(found, "pipeline_spec"):  # already a @dsl.pipeline
        return found
    if name == "finetune":
        from pipelines.finetune import FinetuneConfig, FinetuneConfigError

        raw: dict[str, Any] = {}
        if settings.finetune_config is not None:
            try:
                raw = yaml.safe_load(settings.finetune_config.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise CompileError(f"finetune_config: cannot read {settings.finetune_config}: {exc}") from exc
        try:
            return found(FinetuneConfig.from_dict(raw))
        except FinetuneConfigError as exc:
            raise CompileError(f"finetune_config: {exc}") from exc
    return found()


def load_ir(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the (possibly empty) Kubernetes platform spec of a compiled YAML file."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    platform = docs[1] if len(docs) > 1 else {}
    return docs[0], platform


def task_images(path: str | os.PathLike[str]) -> list[str]:
    """The container image of every executor in a compiled pipeline."""
    spec, _ = load_ir(path)
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return [e["container"]["image"] for e in executors.values() if "container" in e]


def _parse_only(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    fields = CompileSettings.model_fields
    parser.add_argument("--out", type=Path, default=Path("pipelines/compiled"), help=fields["out"].description)
    parser.add_argument("--registry", default=None, help=fields["registry"].description + " Env: RAGTUNE_REGISTRY.")
    parser.add_argument("--tag", default=None, help=fields["tag"].description + " Env: RAGTUNE_IMAGE_TAG.")
    parser.add_argument("--only", type=_parse_only, default=None, help="Comma-separated subset: index,finetune.")
    parser.add_argument("--finetune-config", type=Path, default=None, metavar="FILE",
                        help=fields["finetune_config"].description)


def _settings_from_args(args: argparse.Namespace) -> CompileSettings:
    given = {"out": args.out}
    for key in ("registry", "tag", "only", "finetune_config"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    return CompileSettings(**given)


def _run(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError

    try:
        settings = _settings_from_args(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"--{first['loc'][0]}: {first['msg']}") from None
    try:
        compile_pipelines(settings)
    except CompileError as exc:
        raise CliError(str(exc)) from None
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ragtune compile``."""
    parser = subparsers.add_parser("compile", help="write the pipelines as KFP YAML for the Kubeflow UI",
                                   description=__doc__.splitlines()[0])
    _add_arguments(parser)
    parser.set_defaults(func=_run)


def main(argv: list[str] | None = None) -> int:
    from pipelines.cli import main as cli_main

    return cli_main(["compile", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
