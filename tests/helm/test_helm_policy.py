"""Policy checks over every Pod template the chart renders, for its defaults and every ci/*-values.yaml scenario.

Pod Security Standards "restricted" (runAsNonRoot, seccomp RuntimeDefault, drop ALL, no privilege escalation) plus a
read-only root filesystem; requests and limits on every container; secrets only through secretKeyRef; NetworkPolicies;
autoscaling fields equal to the values given; Chainlit session affinity when it has several replicas.
"""

from __future__ import annotations

import re

import pytest

from scripts.render_manifests import scenario_values
from tests.helm.chart_objects import SCENARIOS, by_kind, pod_specs, render

WRITABLE_MOUNTS = {"/tmp", "/home/ragtune/.cache", "/app/frontend/.files"}
SECRETISH = re.compile(r"(key|token|secret|password|passwd|credential)", re.IGNORECASE)


def _containers(spec):
    return list(spec.get("initContainers") or []) + list(spec["containers"])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_security_restricted_and_read_only_root(scenario):
    specs = pod_specs(render(scenario))
    assert len(specs) >= 4  # LLM, retriever, frontend and the helm test Pods at least
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] >= 10000, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), (name, key)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "persistentVolumeClaim", "projected"}, (
                name, volume)  # restricted allows no hostPath
        for container in _containers(spec):
            where = f"{name}/{container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert sc["runAsNonRoot"] is True and sc["runAsUser"] >= 10000, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert not sc.get("privileged"), where
            for mount in container.get("volumeMounts") or []:
                volume = volumes[mount["name"]]
                if "emptyDir" in volume:
                    assert mount["mountPath"] in WRITABLE_MOUNTS, (where, mount)
                    assert volume["emptyDir"].get("sizeLimit"), (where, mount)
                else:
                    assert mount.get("readOnly") is True, (where, mount)
            assert {m["mountPath"] for m in container.get("volumeMounts") or []} >= {"/tmp", "/home/ragtune/.cache"}, where


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_container_has_requests_and_limits(scenario):
    for name, spec in pod_specs(render(scenario)):
        for container in _containers(spec):
            resources = container["resources"]
            for section in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[section]), (name, container["name"], section)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_plaintext_secrets_in_env(scenario):
    objects = render(scenario)
    secret_values = {v for s in by_kind(objects, "Secret") for v in (s.get("data") or {}).values()}
    plain_secret_values = set((scenario_values(scenario) if scenario != "default" else {}).get("secrets", {}).get("values", {}).values())
    for name, spec in pod_specs(objects):
        for container in _containers(spec):
            assert not container.get("envFrom"), (name, "envFrom would expose a whole Secret or ConfigMap")
            for env in container.get("env") or []:
                where = f"{name}/{container['name']}/{env['name']}"
                if "valueFrom" in env:
                    assert set(env["valueFrom"]) == {"secretKeyRef"} or "secretKeyRef" not in env["valueFrom"], where
                    continue
                value = str(env.get("value", ""))
                assert value not in plain_secret_values and value not in secret_values, where
                if SECRETISH.search(env["name"]):
                    pytest.fail(f"{where} looks like a secret but has a plain value")
            for arg in (container.get("args") or []) + (container.get("command") or []):
                assert arg not in plain_secret_values, (name, "secret value on the command line")


def test_auth_reads_keys_from_the_existing_secret_only():
    objects = render("auth")
    assert by_kind(objects, "Secret") == []
    refs = {}
    for name, spec in pod_specs(objects):
        for container in _containers(spec):
            for env in container.get("env") or []:
                if "secretKeyRef" in env.get("valueFrom", {}):
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == "ragtune-secrets", (name, env)
                    refs.setdefault(env["name"], set()).add(name.split("/")[1])
    assert "ragtune-llm" in refs["RAGTUNE_LLM_API_KEY"]  # serving/llm/settings.py: api_key
    assert "ragtune-frontend" in refs["RAGTUNE_CHAT_LLM_API_KEY"]  # frontend/settings.py: llm_api_key
    assert "ragtune-frontend" in refs["CHAINLIT_AUTH_SECRET"] and "ragtune-frontend" in refs["RAGTUNE_CHAT_AUTH_PASSWORD"]
    assert "ragtune-test-ready-llm" in refs["RAGTUNE_LLM_API_KEY"]
    # Off by default: no keys at all.
    assert not any("secretKeyRef" in e.get("valueFrom", {})
                   for _, s in pod_specs(render()) for c in _containers(s) for e in c.get("env") or [])


def test_chart_created_secret_holds_the_values_and_pods_reference_it():
    objects = render("per-model")
    (secret,) = by_kind(objects, "Secret")
    assert set(secret["data"]) == {"hf-token"}
    llm = [spec for name, spec in pod_specs(objects) if name.startswith("InferenceService/ragtune-llm-")]
    assert len(llm) == 2
    for spec in llm:
        (hf,) = [e for e in spec["containers"][0]["env"] if e["name"] == "HF_TOKEN"]
        assert hf["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "hf-token", "optional": True}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies_default_deny_and_allow_paths(scenario):
    objects = render(scenario)
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(objects, "NetworkPolicy")}
    deny = policies["ragtune-default-deny"]
    assert deny["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ragtune", "app.kubernetes.io/instance": "ragtune"}
    assert sorted(deny["policyTypes"]) == ["Egress", "Ingress"] and "ingress" not in deny and "egress" not in deny
    frontend = policies["ragtune-frontend"]
    assert frontend["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    to_predictors = frontend["egress"][0]["to"][0]["podSelector"]["matchExpressions"]
    assert {"key": "app.kubernetes.io/component", "operator": "In", "values": ["llm", "retriever"]} in to_predictors
    predictors = policies["ragtune-predictors"]
    allowed = predictors["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]
    assert {"key": "app.kubernetes.io/component", "operator": "In", "values": ["frontend", "test"]} in allowed
    # Every Pod the chart makes is covered by the default deny.
    for name, spec in pod_specs(objects):
        obj = next(o for o in objects if f"{o['kind']}/{o['metadata']['name']}" == name)
        labels = spec.get("labels") if obj["kind"] == "InferenceService" else (
            obj["spec"]["template"]["metadata"]["labels"] if obj["kind"] == "Deployment" else obj["metadata"]["labels"])
        assert deny["podSelector"]["matchLabels"].items() <= labels.items(), name
        assert labels["app.kubernetes.io/component"] in {"llm", "retriever", "frontend", "test"}, name


def test_network_policies_toggle_off():
    import helm_python

    from tests.helm.chart_objects import chart_dir

    rendered = helm_python.Chart.load(chart_dir()).render({"networkPolicy": {"enabled": False}}, name="ragtune", namespace="ragtune")
    assert "kind: NetworkPolicy" not in "".join(rendered.values())


def _predictor(objects, name):
    (isvc,) = [i for i in by_kind(objects, "InferenceService") if i["metadata"]["name"] == name]
    return isvc


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_autoscaling_fields_equal_the_values(scenario):
    import helm_python

    from tests.helm.chart_objects import chart_dir

    values = helm_python.Chart.load(chart_dir()).merge_values({} if scenario == "default" else scenario_values(scenario))
    objects = render(scenario)
    knative = values["deploymentMode"] in ("Knative", "Serverless")
    llm_names = [i["metadata"]["name"] for i in by_kind(objects, "InferenceService") if "-llm" in i["metadata"]["name"]]
    assert llm_names
    for name, section in [(n, "llm") for n in llm_names] + [("ragtune-retriever", "retriever")]:
        isvc = _predictor(objects, name)
        wanted = values[section]["autoscaling"]
        predictor = isvc["spec"]["predictor"]
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] == values["deploymentMode"]
        assert predictor["minReplicas"] == wanted["minReplicas"]
        assert predictor["maxReplicas"] == wanted["maxReplicas"]
        if knative:
            assert predictor["scaleMetric"] == "concurrency"
            assert predictor["scaleTarget"] == wanted["concurrencyTarget"]
            assert predictor.get("containerConcurrency", 0) == wanted["containerConcurrency"]
            assert "serving.kserve.io/autoscalerClass" not in annotations
        else:
            assert predictor["scaleMetric"] == "cpu"
            assert predictor["scaleTarget"] == wanted["cpuTargetUtilization"]
            assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
            assert "containerConcurrency" not in predictor


def test_scale_to_zero_for_the_llm_in_knative_mode():
    llm = _predictor(render("serverless"), "ragtune-llm")["spec"]["predictor"]
    assert llm["minReplicas"] == 0 and llm["containerConcurrency"] == 8


def test_default_concurrency_target_matches_docs_autoscaling():
    """The default LLM scaleTarget is the per-replica capacity derived in docs/autoscaling.md."""
    from pathlib import Path

    from tests.helm.chart_objects import chart_dir

    doc = (Path(chart_dir()).parent.parent / "docs" / "autoscaling.md").read_text()
    match = re.search(r"concurrencyTarget\s*=\s*(\d+)", doc)
    assert match, "docs/autoscaling.md must state the derived llm concurrencyTarget = N"
    assert _predictor(render(), "ragtune-llm")["spec"]["predictor"]["scaleTarget"] == int(match.group(1))


def test_session_affinity_only_with_several_chat_replicas():
    single = by_kind(render(), "Service")[0]["spec"]
    assert "sessionAffinity" not in single
    objects = render("ingress")
    service = by_kind(objects, "Service")[0]["spec"]
    assert service["sessionAffinity"] == "ClientIP"
    (ingress,) = by_kind(objects, "Ingress")
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert ingress["spec"]["tls"][0]["secretName"] == "ragtune-chat-tls"
    assert by_kind(objects, "Deployment")[0]["spec"]["replicas"] == 3


def test_models_and_index_come_from_storage_not_the_image():
    objects = render()
    (pvc,) = by_kind(objects, "PersistentVolumeClaim")
    uris = {}
    for isvc in by_kind(objects, "InferenceService"):
        env = {e["name"]: e.get("value") for e in isvc["spec"]["predictor"]["containers"][0]["env"]}
        uris[isvc["metadata"]["name"]] = env["STORAGE_URI"]
    assert uris == {"ragtune-llm": f"pvc://{pvc['metadata']['name']}/models",
                    "ragtune-retriever": f"pvc://{pvc['metadata']['name']}/index"}


def test_helm_test_pods_check_each_predictor_and_one_retrieval():
    for scenario in ("default", "per-model"):
        objects = render(scenario)
        hooks = [p for p in by_kind(objects, "Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test"]
        checked = {tuple(p["spec"]["containers"][0]["args"][:2]) for p in hooks}
        for isvc in by_kind(objects, "InferenceService"):
            url = f"http://{isvc['metadata']['name']}-predictor.ragtune.svc.cluster.local"
            assert ("ready", url) in checked, (scenario, url)
        assert ("retrieve", "http://ragtune-retriever-predictor.ragtune.svc.cluster.local") in checked
