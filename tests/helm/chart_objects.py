"""Render the ragtune chart with the real Helm SDK and check objects against real schemas.

Shared by the chart, policy and manifests tests. Kubernetes objects are validated with ``kubernetes-validate`` (strict:
unknown fields fail) for the pinned Kubernetes version; InferenceServices, which that package has no schema for, are
walked against the kserve SDK's own generated model (``V1beta1InferenceService`` and the ``kubernetes`` client models
it references), rejecting any field the model does not declare and any value of the wrong type.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from scripts.render_manifests import CHART, render_chart, scenario_values, scenarios

#: Kubernetes version the objects are validated against (the chart's kubeVersion allows >= 1.28).
K8S_VERSION = "1.30.0"
SCENARIOS = ["default", *scenarios()]


@functools.lru_cache(maxsize=None)
def _render_cached(scenario: str) -> tuple:
    values = {} if scenario == "default" else scenario_values(scenario)
    return tuple(render_chart(values))


def render(scenario: str = "default") -> list[dict[str, Any]]:
    """Objects of the chart rendered for ``scenario`` ("default" or a ci/<name>-values.yaml name); a fresh copy."""
    import copy

    return copy.deepcopy(list(_render_cached(scenario)))


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, Pod spec) of every Pod template: InferenceService predictors, Deployments, bare Pods."""
    specs = []
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] == "InferenceService":
            specs.append((name, obj["spec"]["predictor"]))
        elif obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append((name, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "Pod":
            specs.append((name, obj["spec"]))
    return specs


def validate_kubernetes(obj: dict[str, Any]) -> None:
    """Raise when ``obj`` breaks the Kubernetes schema (strict) of :data:`K8S_VERSION`."""
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


class SchemaMismatch(AssertionError):
    """An object does not fit the kserve SDK's model of it."""


def validate_inference_service(obj: dict[str, Any]) -> None:
    """Walk ``obj`` against kserve's V1beta1InferenceService model; unknown fields and wrong types raise."""
    if obj.get("apiVersion") != "serving.kserve.io/v1beta1" or obj.get("kind") != "InferenceService":
        raise SchemaMismatch(f"not a v1beta1 InferenceService: {obj.get('apiVersion')} {obj.get('kind')}")
    _walk(obj, "V1beta1InferenceService", "")


def _model_class(type_name: str):
    import kserve.models
    import kubernetes.client.models

    for module in (kserve.models, kubernetes.client.models):
        cls = getattr(module, type_name, None)
        if cls is not None:
            return cls
    raise SchemaMismatch(f"no model class {type_name}")


_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(([^,]+), (.+)\)$")


def _walk(value: Any, type_name: str, path: str) -> None:
    if value is None:
        return
    if m := _LIST.match(type_name):
        if not isinstance(value, list):
            raise SchemaMismatch(f"{path}: expected a list ({type_name}), got {type(value).__name__}")
        for i, item in enumerate(value):
            _walk(item, m.group(1), f"{path}[{i}]")
        return
    if m := _DICT.match(type_name):
        if not isinstance(value, dict):
            raise SchemaMismatch(f"{path}: expected a map ({type_name}), got {type(value).__name__}")
        for key, item in value.items():
            _walk(key, m.group(1), f"{path}.<key>")
            _walk(item, m.group(2), f"{path}.{key}")
        return
    scalars = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in scalars:
        if type_name == "int" and isinstance(value, bool) or not isinstance(value, scalars[type_name]):
            raise SchemaMismatch(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if type_name in ("object", "ResourceQuantity", "IntOrString"):
        if type_name in ("ResourceQuantity", "IntOrString") and not isinstance(value, (str, int, float)):
            raise SchemaMismatch(f"{path}: expected a quantity, got {value!r}")
        return
    if type_name in ("datetime", "date"):
        if not isinstance(value, str):
            raise SchemaMismatch(f"{path}: expected a timestamp string, got {value!r}")
        return
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        raise SchemaMismatch(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            raise SchemaMismatch(f"{path or '.'}: unknown field {key!r} for {type_name}")
        _walk(item, cls.openapi_types[by_json[key]], f"{path}.{key}")


def chart_dir() -> str:
    return str(CHART)
