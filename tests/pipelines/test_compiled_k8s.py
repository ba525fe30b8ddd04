"""The pipelines compile to KFP IR YAML that a Kubeflow cluster can run as intended.

`python -m pipelines.compile` runs as a real subprocess with a test registry and tag (components choose their image
when imported, so a fresh interpreter is the honest check). The YAML is then read back: every task runs an image from
that registry and tag, and the fine-tuning pipeline's train task carries the GPU accelerator limit, the A100 node
selector, the toleration, HF_TOKEN from a Secret and the cache PVC (kfp-kubernetes' platform spec, second document).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.compile import PIPELINES, load_ir, task_images

ROOT = Path(__file__).resolve().parent.parent.parent
TEST_REGISTRY = "registry.test.local:5000/ragtune-ci"
TEST_TAG = "9.9.9-test"


def _available() -> list[str]:
    import importlib.util

    return [name for name, (module, _) in PIPELINES.items() if importlib.util.find_spec(module) is not None]


def _compile(out: Path, *extra: str, registry: str = TEST_REGISTRY, tag: str = TEST_TAG) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.pop("RAGTUNE_REGISTRY", None)
    env.pop("RAGTUNE_IMAGE_TAG", None)
    return subprocess.run(
        [sys.executable, "-m", "pipelines.compile", "--out", str(out), "--registry", registry, "--tag", tag,
         "--only", ",".join(_available()), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    if not _available():
        pytest.skip("no pipeline module exists yet (pipelines/index.py, pipelines/finetune.py)")
    out = tmp_path_factory.mktemp("compiled")
    result = _compile(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_task_runs_an_image_from_the_configured_registry(compiled):
    for name in _available():
        images = task_images(compiled / f"{name}_pipeline.yaml")
        assert images, name
        for image in images:
            assert image.startswith(f"{TEST_REGISTRY}/ragtune-") and image.endswith(f":{TEST_TAG}"), (name, image)


def _train_executor(spec: dict) -> tuple[str, dict]:
    tasks = spec["root"]["dag"]["tasks"]
    (task_name,) = [n for n, t in tasks.items() if t.get("taskInfo", {}).get("name") == "train" or n == "train-model"]
    component = tasks[task_name]["componentRef"]["name"]
    executor = spec["components"][component]["executorLabel"]
    return executor, spec["deploymentSpec"]["executors"][executor]


def test_train_task_is_placed_on_a_gpu_node(compiled):
    if "finetune" not in _available():
        pytest.skip("pipelines/finetune.py does not exist yet")
    from pipelines.finetune import PlacementConfig

    placement = PlacementConfig()
    spec, platform = load_ir(compiled / "finetune_pipeline.yaml")
    executor, deployment = _train_executor(spec)
    assert deployment["container"]["image"] == f"{TEST_REGISTRY}/ragtune-train:{TEST_TAG}"
    accelerator = deployment["container"]["resources"]["accelerator"]
    assert accelerator.get("resourceType", accelerator.get("type")) == "nvidia.com/gpu"
    assert str(accelerator.get("resourceCount", accelerator.get("count"))) == "1"

    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    assert k8s["nodeSelector"]["labels"] == {placement.node_selector_key: placement.node_selector_value}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in k8s["tolerations"]
    (secret,) = k8s["secretAsEnv"]
    assert secret["secretName"] == placement.hf_token_secret
    assert secret["keyToEnv"] == [{"secretKey": placement.hf_token_secret_key, "envVar": "HF_TOKEN"}]
    # The cache PVC is where HF_HOME and the checkpoints live.
    env = {e["name"]: e["value"] for e in deployment["container"].get("env", [])}
    assert env["HF_HOME"].startswith(placement.cache_mount_path)
    (pvc,) = k8s["pvcMount"]
    assert pvc["mountPath"] == placement.cache_mount_path
    assert pvc["pvcNameParameter"]["runtimeValue"]["constant"] == placement.cache_pvc
    # No other task asks for a GPU or gets the token.
    others = [e for name, e in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items() if name != executor]
    # Publish writes onto the chart's data claim, where the LLM predictor reads models.
    publish_mounts = [m for e in others for m in e.get("pvcMount", [])]
    assert [(m["mountPath"], m["pvcNameParameter"]["runtimeValue"]["constant"]) for m in publish_mounts] == [
        (placement.models_mount_path, placement.models_pvc)]
    assert not any("secretAsEnv" in e or "nodeSelector" in e for e in others)
    for name, e in spec["deploymentSpec"]["executors"].items():
        if name != executor:
            assert "accelerator" not in e["container"].get("resources", {}), name


def test_finetune_config_changes_the_placement(tmp_path):
    if "finetune" not in _available():
        pytest.skip("pipelines/finetune.py does not exist yet")
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"placement": {"node_selector_key": "cloud.google.com/gke-accelerator",
                                                    "node_selector_value": "nvidia-a100-80gb",
                                                    "hf_token_secret": "my-hub-token"}}))
    result = _compile(tmp_path / "out", "--finetune-config", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    spec, platform = load_ir(tmp_path / "out" / "finetune_pipeline.yaml")
    executor, _ = _train_executor(spec)
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"}
    assert k8s["secretAsEnv"][0]["secretName"] == "my-hub-token"


def test_committed_yaml_is_what_make_compile_writes(tmp_path):
    """pipelines/compiled/*.yaml are regenerated by `make compile` (default registry and tag)."""
    if not _available():
        pytest.skip("no pipeline module exists yet")
    from pipelines.images import DEFAULT_REGISTRY, DEFAULT_TAG

    result = _compile(tmp_path, registry=DEFAULT_REGISTRY, tag=DEFAULT_TAG)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in _available():
        committed = ROOT / "pipelines" / "compiled" / f"{name}_pipeline.yaml"
        assert committed.exists(), f"{committed} missing: run make compile"
        assert load_ir(committed) == load_ir(tmp_path / f"{name}_pipeline.yaml"), f"{committed} is stale: run make compile"


@pytest.mark.parametrize("args, field", [(["--registry", "Not A Registry"], "--registry"),
                                         (["--tag", "bad tag!"], "--tag"),
                                         (["--only", "index,gpu"], "only")])
def test_bad_arguments_are_named(tmp_path, args, field):
    result = subprocess.run([sys.executable, "-m", "pipelines.compile", "--out", str(tmp_path), *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert field in result.stderr and "Traceback" not in result.stderr
