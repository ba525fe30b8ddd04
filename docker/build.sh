#!/usr/bin/env bash
# Build (and optionally push) every ragtune image:  docker/build.sh REGISTRY TAG [role ...]
#   REGISTRY  e.g. ghcr.io/ragtune or registry.example.com:5000/ml
#   TAG       an exact tag, e.g. 0.1.0 (never "latest")
#   role      any of: components train llm retriever frontend (default: all)
# Env: CONTAINER_ENGINE=docker|podman (default: whichever is found and answers), PUSH=1 to push after building,
#      PLATFORM=linux/amd64 (default).
# Images are named REGISTRY/ragtune-<role>:TAG, the names pipelines/images.py and helm/ragtune/values.yaml use.
set -euo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
REGISTRY="${1%/}"; TAG="$2"; shift 2
ROLES=("$@"); [ ${#ROLES[@]} -gt 0 ] || ROLES=(components train llm retriever frontend)

if ! [[ "$REGISTRY" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*$ ]]; then
  echo "build.sh: REGISTRY '$REGISTRY' is not a valid registry/path (lowercase host[:port][/path])" >&2; exit 2
fi
if ! [[ "$TAG" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || [ "$TAG" = latest ]; then
  echo "build.sh: TAG '$TAG' must be an exact tag such as 0.1.0 (not 'latest')" >&2; exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
for role in "${ROLES[@]}"; do
  [ -f "$ROOT/docker/$role.Dockerfile" ] || { echo "build.sh: unknown role '$role' (no docker/$role.Dockerfile)" >&2; exit 2; }
done

engine=""
for candidate in ${CONTAINER_ENGINE:-docker podman}; do
  if command -v "$candidate" >/dev/null 2>&1; then
    if "$candidate" info >/dev/null 2>&1; then engine="$candidate"; break; fi
    echo "build.sh: '$candidate' is installed but cannot reach its daemon/service ($candidate info failed)" >&2
  fi
done
if [ -z "$engine" ]; then
  echo "build.sh: no working container engine: install and start docker or podman (or set CONTAINER_ENGINE), then rerun 'make images REGISTRY=$REGISTRY TAG=$TAG'" >&2
  exit 1
fi

[ -f "$ROOT/constraints.txt" ] || { echo "build.sh: constraints.txt is missing at the repository root" >&2; exit 2; }

for role in "${ROLES[@]}"; do
  image="$REGISTRY/ragtune-$role:$TAG"
  echo ">> $engine build $image (docker/$role.Dockerfile)"
  "$engine" build --platform "${PLATFORM:-linux/amd64}" -f "$ROOT/docker/$role.Dockerfile" -t "$image" "$ROOT"
  if [ "${PUSH:-0}" = 1 ]; then "$engine" push "$image"; fi
done
echo ">> built: ${ROLES[*]} as $REGISTRY/ragtune-<role>:$TAG"
