"""The fine-tuning pipeline: data -> train -> export -> evaluate -> gate (dsl.If) -> publish.

One typed :class:`FinetuneConfig` (a YAML file plus ``--set section.key=value`` overrides) drives both forms:

- ``ragtune finetune --config FILE`` runs the pipeline locally through ``kfp.local`` (SubprocessRunner, the current
  interpreter), the same components the cluster runs;
- ``ragtune finetune --config FILE --compile OUT.yaml`` (or ``make compile``) writes the KFP IR YAML to upload in
  the Kubeflow UI, with the train task placed on an A100 node (accelerator limit, node selector, toleration,
  ``HF_TOKEN`` from a Secret, a PVC for caches and checkpoints), all taken from the ``placement`` section.
"""


import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from components.evaluate.config import EvalConfig, EvalConfigError
from components.export.config import ExportConfig, ExportConfigError, describe_validation_error
from components.publish.config import PublishConfig, PublishConfigError
from pipelines.images import image

log = logging.getLogger("ragtune.finetune")

PIPELINE_NAME = "ragtune-finetune"
REPO_ROOT = Path(__file__).resolve().parent.parent


class FinetuneConfigError(ValueError):
    """The fine-tuning config is invalid; the message names the field as ``section.key``."""


class PlacementConfig(BaseModel):
    """Where the train task runs on the cluster (compile time only; the local runner ignores all of it)."""

    model_config = ConfigDict(extra="forbid")

    gpu: bool = Field(True, description="Request a GPU and A100 placement for the train task.")
    accelerator_type: str = Field("nvidia.com/gpu", min_length=1, description="Accelerator resource name.")
    accelerator_limit: int = Field(1, ge=1, le=16, description="GPUs for the train task.")
    node_selector_key: str = Field(
        "nvidia.com/gpu.product", min_length=1, description="Node label key selecting the GPU nodes."
    )
    node_selector_value: str = Field(
        "NVIDIA-A100-SXM4-40GB", min_length=1, description="Node label value selecting the GPU nodes."
    )
    toleration_key: str = Field("nvidia.com/gpu", min_length=1, description="Taint key the train task tolerates.")
    toleration_operator: Literal["Exists", "Equal"] = Field("Exists", description="Toleration operator.")
    toleration_value: str | None = Field(None, description="Taint value (with operator Equal).")
    toleration_effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        "NoSchedule", description="Taint effect the train task tolerates."
    )
    hf_token_secret: str | None = Field(
        "hf-token", description="Kubernetes Secret holding the Hub token (exposed as HF_TOKEN); null: none."
    )
    hf_token_secret_key: str = Field("token", min_length=1, description="Key of the token inside that Secret.")
    cache_pvc: str | None = Field(
        "ragtune-cache", description="PVC mounted into the train task for caches and checkpoints; null: none."
    )
    cache_mount_path: str = Field("/cache", pattern=r"^/", description="Where the PVC is mounted (HF_HOME below).")
    models_pvc: str | None = Field(
        "ragtune-data",
        description="PVC mounted into the publish task: the Helm chart's data claim, whose models/ the LLM predictor "
        "serves (set publish.store_dir and publish.catalog_path under models_mount_path); null: none.",
    )
    models_mount_path: str = Field("/data", pattern=r"^/", description="Where models_pvc is mounted for publish.")


class RunConfig(BaseModel):
    """Local run settings (``ragtune finetune``)."""

    model_config = ConfigDict(extra="forbid")

    pipeline_root: str = Field(
        ".ragtune/pipeline-root", min_length=1, description="kfp.local pipeline root: every step's artifacts."
    )


@dataclasses.dataclass
class FinetuneConfig:
    """The whole fine-tuning configuration: one section per step, plus placement and local-run settings."""

    data: Any
    train: Any
    export: ExportConfig
    evaluate: EvalConfig
    publish: PublishConfig
    placement: PlacementConfig
    run: RunConfig

    SECTIONS = ("data", "train", "export", "evaluate", "publish", "placement", "run")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "FinetuneConfig":
        """Validate every section; the first problem raises FinetuneConfigError naming ``section.key``."""
        from components.data.fields import ConfigError
        from components.data.prepare import DataConfig
        from components.train.config import TrainConfig

        raw = raw or {}
        if not isinstance(raw, dict):
            raise FinetuneConfigError("the config must be a mapping of sections: " + ", ".join(cls.SECTIONS))
        unknown = sorted(set(raw) - set(cls.SECTIONS))
        if unknown:
            raise FinetuneConfigError(f"{unknown[0]}: unknown section; sections are {', '.join(cls.SECTIONS)}")
        for name in cls.SECTIONS:
            if raw.get(name) is not None and not isinstance(raw[name], dict):
                raise FinetuneConfigError(f"{name}: must be a mapping of settings, got {raw[name]!r}")

        def section(name: str, build: Callable[[dict[str, Any]], Any]) -> Any:
            try:
                return build(raw.get(name) or {})
            except ConfigError as exc:
                raise FinetuneConfigError(f"{name}.{exc}") from exc
            except (ExportConfigError, EvalConfigError, PublishConfigError) as exc:
                raise FinetuneConfigError(str(exc)) from exc
            except ValidationError as exc:
                raise FinetuneConfigError(describe_validation_error(exc, prefix=name)) from exc

        return cls(
            data=section("data", DataConfig.from_dict),
            train=section("train", TrainConfig.from_dict),
            export=section("export", ExportConfig.from_dict),
            evaluate=section("evaluate", EvalConfig.from_dict),
            publish=section("publish", PublishConfig.from_dict),
            placement=section("placement", PlacementConfig.model_validate),
            run=section("run", RunConfig.model_validate),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None, overrides: list[str] = ()) -> "FinetuneConfig":
        """Read a YAML file (None: all defaults) and apply ``section.key=value`` overrides (values parsed as YAML)."""
        raw: dict[str, Any] = {}
        if path is not None:
            try:
                raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except FileNotFoundError as exc:
                raise FinetuneConfigError(f"--config: file {path} does not exist") from exc
            except (OSError, yaml.YAMLError) as exc:
                raise FinetuneConfigError(f"--config: cannot read {path}: {exc}") from exc
            if not isinstance(raw, dict):
                raise FinetuneConfigError(f"--config: {path} must hold a mapping of sections")
        for item in overrides:
            apply_override(raw, item)
        return cls.from_dict(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every section (what the pipeline parameters carry)."""
        return {
            "data": dataclasses.asdict(self.data),
            "train": self.train.to_dict() if hasattr(self.train, "to_dict") else dataclasses.asdict(self.train),
            "export": self.export.to_dict(),
            "evaluate": self.evaluate.to_dict(),
            "publish": self.publish.to_dict(),
            "placement": self.placement.model_dump(mode="json"),
            "run": self.run.model_dump(mode="json"),
        }


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``section.key=value`` to the raw config; the value is parsed as YAML (``3``, ``true``, ``[a, b]``)."""
    key, sep, value = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise FinetuneConfigError(f"--set {item!r}: expected section.key=value, e.g. train.max_steps=5")
    if parts[0] not in FinetuneConfig.SECTIONS:
        raise FinetuneConfigError(
            f"--set {item!r}: {parts[0]}: unknown section; sections are {', '.join(FinetuneConfig.SECTIONS)}"
        )
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError as exc:
        raise FinetuneConfigError(f"--set {item!r}: value is not valid YAML: {exc}") from exc
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = parsed


# -- the pipeline ----------------------------------------------------------------------------------------------


def apply_gpu_placement(task: Any, placement: PlacementConfig) -> Any:
    """Put ``task`` on a GPU node: accelerator limit, node selector, toleration, HF_TOKEN secret, cache PVC."""
    from kfp import kubernetes

    if placement.gpu:
        task.set_accelerator_type(placement.accelerator_type).set_accelerator_limit(placement.accelerator_limit)
        kubernetes.add_node_selector(task, label_key=placement.node_selector_key,
                                     label_value=placement.node_selector_value)
        kubernetes.add_toleration(task, key=placement.toleration_key, operator=placement.toleration_operator,
                                  value=placement.toleration_value, effect=placement.toleration_effect)
    if placement.hf_token_secret:
        kubernetes.use_secret_as_env(task, secret_name=placement.hf_token_secret,
                                     secret_key_to_env={placement.hf_token_secret_key: "HF_TOKEN"})
    if placement.cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=placement.cache_pvc, mount_path=placement.cache_mount_path)
        mount = placement.cache_mount_path.rstrip("/")
        task.set_env_variable("HF_HOME", f"{mount}/huggingface")
        # The train step keeps checkpoints under $RAGTUNE_HOME: on the PVC a retried pod resumes from them.
        task.set_env_variable("RAGTUNE_HOME", f"{mount}/ragtune")
    return task


def build_pipeline(cfg: FinetuneConfig | None = None) -> Callable[..., Any]:
    """Define ``finetune_pipeline`` with ``cfg``'s sections as parameter defaults and its placement applied."""
    from kfp import dsl
    from kfp.dsl import Artifact, Model

    from components.data.component import prepare_data
    from components.evaluate.component import evaluate_model
    from components.export.component import export_gguf
    from components.publish.component import publish_model
    from components.train.component import train_model

    cfg = cfg or FinetuneConfig.from_dict({})
    # KFP parameter values cannot hold null; every optional setting here defaults to None, so leaving it out of
    # the parameter is the same setting.
    defaults = {name: {k: v for k, v in section.items() if v is not None} for name, section in cfg.to_dict().items()}
    data_default, train_default = defaults["data"], defaults["train"]
    export_default, eval_default, publish_default = defaults["export"], defaults["evaluate"], defaults["publish"]
    placement = cfg.placement
    # The components took their images when first imported; set them again so the registry/tag in the
    # environment now (``make compile REGISTRY=... TAG=...``) wins even in a process that imported them earlier.
    cpu_image = image("components")

    class Outputs(NamedTuple):
        passed: bool
        report: Artifact
        gguf: Model

    @dsl.pipeline(name=PIPELINE_NAME,
                  description="ragtune: LoRA SFT -> GGUF export -> perplexity evaluation -> gated publish")
    def finetune_pipeline(
        data_config: dict = data_default,
        train_config: dict = train_default,
        export_config: dict = export_default,
        eval_config: dict = eval_default,
        publish_config: dict = publish_default,
    ) -> Outputs:
        data_task = prepare_data(config=data_config).set_display_name("data").set_container_image(cpu_image)
        train_task = train_model(dataset=data_task.outputs["dataset"], config=train_config)
        train_task.set_display_name("train").set_container_image(image("train"))
        apply_gpu_placement(train_task, placement)
        export_task = export_gguf(model=train_task.outputs["model"], config=export_config)
        export_task.set_display_name("export").set_container_image(cpu_image)
        eval_task = evaluate_model(
            dataset=data_task.outputs["dataset"],
            model=train_task.outputs["model"],
            gguf=export_task.outputs["gguf"],
            config=eval_config,
        ).set_display_name("evaluate").set_container_image(cpu_image)
        with dsl.If(eval_task.outputs["Output"] == True, name="gate-passed"):  # noqa: E712 (KFP condition)
            publish_task = publish_model(gguf=export_task.outputs["gguf"], report=eval_task.outputs["report"],
                                         config=publish_config)
            publish_task.set_display_name("publish").set_container_image(cpu_image)
            if placement.models_pvc:
                from kfp import kubernetes

                kubernetes.mount_pvc(publish_task, pvc_name=placement.models_pvc,
                                     mount_path=placement.models_mount_path)
        return Outputs(passed=eval_task.outputs["Output"], report=eval_task.outputs["report"],
                       gguf=export_task.outputs["gguf"])

    return finetune_pipeline


def compile_pipeline(cfg: FinetuneConfig | None, out_file: str | os.PathLike[str]) -> Path:
    """Write the KFP IR YAML of ``finetune_pipeline`` (for the Kubeflow UI) to ``out_file``."""
    from kfp import compiler

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out_file))
    return out_file


def absolutize(cfg: FinetuneConfig, base: Path) -> FinetuneConfig:
    """Make the local paths in ``cfg`` absolute, so steps running as subprocesses do not depend on their cwd."""

    def fix(value: str) -> str:
        return value if os.path.isabs(value) else str((base / value).resolve())

    cfg.publish = cfg.publish.model_copy(update={"store_dir": fix(cfg.publish.store_dir),
                                                 "catalog_path": fix(cfg.publish.catalog_path)})
    cfg.run = cfg.run.model_copy(update={"pipeline_root": fix(cfg.run.pipeline_root)})
    if getattr(cfg.data, "source", "") and Path(base / cfg.data.source).exists():
        cfg.data = dataclasses.replace(cfg.data, source=fix(cfg.data.source))
    return cfg


def run_local(cfg: FinetuneConfig) -> dict[str, Any]:
    """Run the whole pipeline with ``kfp.local`` on this machine; return the gate result and the report."""
    from kfp import local

    root = Path(cfg.run.pipeline_root)
    root.mkdir(parents=True, exist_ok=True)
    # Steps run as subprocesses of this interpreter; they import `components` from this checkout.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    started = time.perf_counter()
    task = build_pipeline(cfg)()
    report_dir = Path(task.outputs["report"].path)
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    return {
        "passed": bool(task.outputs["passed"]),
        "report_dir": str(report_dir),
        "gguf_dir": task.outputs["gguf"].path,
        "report": report,
        "catalog_path": cfg.publish.catalog_path,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- the `ragtune finetune` command ----------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``ragtune finetune``."""
    parser = subparsers.add_parser(
        "finetune",
        help="run the fine-tuning pipeline locally (kfp.local) or compile it for Kubeflow",
        description="Run data -> train -> export -> evaluate -> gate -> publish locally through kfp.local, "
        "or write the compiled pipeline YAML for the Kubeflow UI with --compile.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config (sections: " +
                        ", ".join(FinetuneConfig.SECTIONS) + "); default: all defaults")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting, e.g. --set train.max_steps=5 (repeatable; values are YAML)")
    parser.add_argument("--compile", metavar="OUT.yaml", help="write the KFP pipeline YAML instead of running")
    parser.add_argument("--print-config", action="store_true", help="print the validated config and exit")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from pipelines.cli import CliError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = FinetuneConfig.load(args.config, args.overrides)
    except FinetuneConfigError as exc:
        raise CliError(str(exc)) from exc
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.compile:
        path = compile_pipeline(cfg, args.compile)
        print(f"wrote {path}: upload it in the Kubeflow UI (Pipelines > Upload pipeline)")
        return 0
    cfg = absolutize(cfg, Path.cwd())
    log.info("event=finetune_start pipeline_root=%s", cfg.run.pipeline_root)
    result = run_local(cfg)
    report = result["report"]
    gate = report.get("gate") or {}
    print(Path(result["report_dir"], "report.md").read_text(encoding="utf-8"))
    if result["passed"]:
        print(f"published to {cfg.publish.store_dir if cfg.publish.store == 'local' else cfg.publish.hub_repo}; "
              f"catalog {result['catalog_path']}")
    else:
        print(f"not published: the gate failed ({gate.get('reason', 'see the report')})")
    print(f"finished in {result['seconds']} s; artifacts under {cfg.run.pipeline_root}")
    return 0


if __name__ == "__main__":  # pragma: no cover - convenience: python -m pipelines.finetune ...
    from pipelines.cli import main

    sys.exit(main(["finetune", *sys.argv[1:]]))
