"""finetune_pipeline: config handling, the compiled KFP YAML (GPU placement), and real local runs with kfp.local.

The local runs execute every component as a subprocess of this interpreter (SubprocessRunner, use_venv=False) on
SmolLM2-135M: nothing is faked. kfp-kubernetes settings only show up in the compiled YAML; locally they are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.finetune import FinetuneConfig, FinetuneConfigError, compile_pipeline

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "finetune-demo.yaml"


# -- config ----------------------------------------------------------------------------------------------------


def test_demo_config_loads_and_overrides_apply():
    cfg = FinetuneConfig.load(DEMO, ["train.max_steps=3", "export.quant_types=[q8_0]", "evaluate.margin=0.5",
                                     "placement.node_selector_value=NVIDIA-H100-80GB-HBM3"])
    assert cfg.train.max_steps == 3 and cfg.train.max_seq_length == 256
    assert cfg.export.quant_types == ["q8_0"]
    assert cfg.evaluate.margin == 0.5
    assert cfg.placement.node_selector_value == "NVIDIA-H100-80GB-HBM3"
    assert cfg.data.heldout_size == 8
    assert FinetuneConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lora_r=0", "train.lora_r"),
        ("train.backend=tpu", "train.backend"),
        ("data.heldout_size=-1", "data.heldout_size"),
        ("export.quant_types=[q8_0, q9_z]", "export.quant_types"),
        ("evaluate.repeats=0", "evaluate.repeats"),
        ("publish.store=s3", "publish.store"),
        ("placement.accelerator_limit=0", "placement.accelerator_limit"),
        ("training.max_steps=1", "training"),
        ("train=5", "section.key=value"),
        ("export.no_such_key=1", "export.no_such_key"),
    ],
)
def test_bad_values_are_named_in_the_error(override, field):
    with pytest.raises(FinetuneConfigError, match=field.replace(".", r"\.")):
        FinetuneConfig.load(DEMO, [override])


def test_cli_reports_a_bad_field_without_a_traceback(capsys, tmp_path):
    from pipelines.cli import main

    assert main(["finetune", "--config", str(DEMO), "--set", "evaluate.margin=-5"]) == 2
    err = capsys.readouterr().err
    assert "evaluate.margin" in err and "Traceback" not in err
    assert main(["finetune", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "--config" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    assert main(["finetune", "--config", str(tmp_path / "list.yaml")]) == 2
    assert "mapping" in capsys.readouterr().err
    assert main(["finetune", "--config", str(DEMO), "--set", "train.max_steps=2", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["max_steps"] == 2


# -- compiled form ---------------------------------------------------------------------------------------------


def _executor_of(pipeline_spec: dict, task_name: str) -> str:
    component = pipeline_spec["root"]["dag"]["tasks"][task_name]["componentRef"]["name"]
    return pipeline_spec["components"][component]["executorLabel"]


def test_compiled_yaml_places_the_train_task_on_an_a100_node(tmp_path, monkeypatch):
    import components.train.component  # noqa: F401  (imported before the env change, as in a long-lived process)
    from pipelines.images import image

    monkeypatch.setenv("RAGTUNE_REGISTRY", "registry.example.com/ml")
    monkeypatch.setenv("RAGTUNE_IMAGE_TAG", "1.2.3")
    cfg = FinetuneConfig.load(DEMO, ["placement.node_selector_key=cloud.google.com/gke-accelerator",
                                     "placement.node_selector_value=nvidia-tesla-a100",
                                     "placement.hf_token_secret=hub-secret", "placement.cache_pvc=train-cache"])
    out = compile_pipeline(cfg, tmp_path / "finetune.yaml")
    pipeline_spec, platform = list(yaml.safe_load_all(out.read_text()))
    # The components took the default images at import; build_pipeline sets the images from the env again.
    train_exec = _executor_of(pipeline_spec, "train-model")
    executors = pipeline_spec["deploymentSpec"]["executors"]
    container = executors[train_exec]["container"]
    assert container["image"] == image("train") == "registry.example.com/ml/ragtune-train:1.2.3"
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert int(container["resources"]["accelerator"]["resourceCount"]) == 1
    for name, spec in executors.items():
        if name != train_exec:
            assert spec["container"]["image"] == image("components"), name
            assert "accelerator" not in spec["container"].get("resources", {}), name
    assert {"name": "HF_HOME", "value": "/cache/huggingface"} in container["env"]
    assert {"name": "RAGTUNE_HOME", "value": "/cache/ragtune"} in container["env"]

    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(k8s) == {train_exec, "exec-publish-model"}, "only train (placement) and publish (models PVC)"
    assert k8s["exec-publish-model"] == {"pvcMount": [
        {"constant": "ragtune-data", "mountPath": "/data", "pvcNameParameter": {"runtimeValue": {"constant": "ragtune-data"}}}
    ]}
    spec = k8s[train_exec]
    assert spec["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    secret = spec["secretAsEnv"][0]
    assert secret["secretName"] == "hub-secret"
    assert secret["keyToEnv"] == [{"secretKey": "token", "envVar": "HF_TOKEN"}]
    pvc = spec["pvcMount"][0]
    assert pvc["constant"] == "train-cache" and pvc["mountPath"] == "/cache"

    tasks = pipeline_spec["root"]["dag"]["tasks"]
    gate = next(t for t in tasks.values() if "triggerPolicy" in t)
    assert "evaluate-model-Output" in gate["triggerPolicy"]["condition"]
    assert set(tasks) >= {"prepare-data", "train-model", "export-gguf", "evaluate-model"}


def test_placement_can_be_switched_off_for_cpu_clusters(tmp_path):
    cfg = FinetuneConfig.load(DEMO, ["placement.gpu=false", "placement.hf_token_secret=null",
                                     "placement.cache_pvc=null", "placement.models_pvc=null"])
    docs = list(yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text()))
    assert len(docs) == 1 or not docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "accelerator" not in yaml.safe_dump(docs[0])


# -- local runs ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`ragtune finetune --config configs/finetune-demo.yaml` end to end on CPU, gate forced open."""
    from pipelines.cli import main

    root = tmp_path_factory.mktemp("finetune")
    args = ["finetune", "--config", str(DEMO),
            "--set", "train.max_steps=2", "--set", f"train.checkpoint_location={root / 'ckpt'}",
            "--set", "export.quant_types=[q4_k_m, q8_0]", "--set", "publish.quant_types=[q4_k_m]",
            "--set", "evaluate.repeats=5", "--set", "evaluate.margin=10.0",
            "--set", f"publish.store_dir={root / 'models'}", "--set", f"publish.catalog_path={root / 'catalog.yaml'}",
            "--set", f"run.pipeline_root={root / 'pipeline-root'}"]
    assert main(args) == 0
    return root


@pytest.mark.slow
def test_local_run_trains_exports_evaluates_and_publishes(demo_run, capsys):
    from components.manifest import verify_manifest
    from serving.llm.catalog import Catalog, resolve_source, verify_sha256

    catalog_path = demo_run / "catalog.yaml"
    entry = Catalog.load(catalog_path).get("smollm2-135m-ragtune-demo")
    assert entry is not None and entry.quantization == "q4_k_m"
    path = resolve_source(entry, catalog_path)
    verify_sha256(entry, path)
    manifest = verify_manifest(path.parent, kind="gguf-model")
    report = manifest["meta"]["eval"]
    assert report["gate"]["passed"] is True
    assert set(report["models"]) == {"finetuned", "base", "gguf:q4_k_m", "gguf:q8_0", "gguf:f16"}
    assert abs(report["fidelity"]["q8_0"]) < 0.02
    assert entry.metrics["ppl_finetuned"] == pytest.approx(report["models"]["finetuned"]["perplexity"], abs=1e-3)


@pytest.mark.slow
def test_gate_closed_skips_publish_in_the_local_runner(demo_run, tmp_path):
    """The dsl.If really runs locally: with a margin no model can meet, publish does not execute."""
    from kfp import dsl, local
    from kfp.dsl import Dataset, Model

    from components.evaluate.component import evaluate_model
    from components.publish.component import publish_model

    root = demo_run / "pipeline-root"
    dataset_dir = next(p for p in root.rglob("heldout.jsonl")).parent
    model_dir = next(p for p in root.rglob("merged") if (p / "config.json").is_file()).parent
    gguf_dir = next(p for p in root.rglob("*.q8_0.gguf")).parent

    # Values are baked in as constants: this module's `from __future__ import annotations` turns parameter
    # annotations into strings, which KFP would read as artifact types.
    margin = -0.99  # no fine-tuned model can be 99 % better than its base
    catalog_path = str(tmp_path / "closed.yaml")

    @dsl.pipeline(name="gate-check")
    def gate_check():
        data = dsl.importer(artifact_uri=str(dataset_dir), artifact_class=Dataset)
        model = dsl.importer(artifact_uri=str(model_dir), artifact_class=Model)
        gguf = dsl.importer(artifact_uri=str(gguf_dir), artifact_class=Model)
        ev = evaluate_model(dataset=data.output, model=model.output, gguf=gguf.output,
                            config={"max_examples": 2, "max_length": 128, "repeats": 1, "quant_types": ["q8_0"],
                                    "margin": margin})
        with dsl.If(ev.outputs["Output"] == True):  # noqa: E712
            publish_model(gguf=gguf.output, report=ev.outputs["report"],
                          config={"store_dir": str(tmp_path / "models"), "catalog_path": catalog_path,
                                  "quant_types": ["q8_0"]})

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    gate_check()
    reports = list((tmp_path / "root").rglob("report.json"))
    assert reports and json.loads(reports[0].read_text())["gate"]["passed"] is False
    assert not (tmp_path / "closed.yaml").exists() and not (tmp_path / "models").exists()
