"""Artifact manifests: every file a component produces is recorded with its sha256, and verified before use.

A manifest is ``manifest.json`` in the artifact directory::

    {"kind": "index", "created_at": "...", "meta": {...},
     "files": {"chunks.parquet": {"sha256": "...", "size": 123}, ...}}

Writers call :func:`write_manifest` after the files are in place; loaders call :func:`verify_manifest`, which raises
:class:`ManifestError` naming the first missing or altered file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class ManifestError(RuntimeError):
    """A manifest is missing, unreadable, or does not match the files beside it."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Text form of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_manifest(
    directory: str | os.PathLike[str],
    files: list[str] | None = None,
    *,
    kind: str,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Hash ``files`` (paths relative to ``directory``; default: every regular file in it) and write the manifest.

    Returns the manifest as a dict.
    """
    directory = Path(directory)
    if files is None:
        files = sorted(
            str(p.relative_to(directory))
            for p in directory.rglob("*")
            if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
        )
    entries = {}
    for rel in files:
        full = directory / rel
        if not full.is_file():
            raise ManifestError(f"cannot record {rel!r}: no such file in {directory}")
        entries[rel] = {"sha256": sha256_file(full), "size": full.stat().st_size}
    manifest = {
        "kind": kind,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "meta": meta or {},
        "files": entries,
    }
    atomic_write_text(directory / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``manifest.json`` from ``directory`` without checking the files."""
    path = Path(directory) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(f"no {MANIFEST_NAME} in {directory}") from exc
    except (OSError, ValueError) as exc:
        raise ManifestError(f"unreadable {path}: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{path} is not a ragtune manifest (no 'files' table)")
    return manifest


def verify_manifest(directory: str | os.PathLike[str], *, kind: str | None = None) -> dict[str, Any]:
    """Check every file listed in the manifest exists with the recorded size and sha256; return the manifest.

    Raises :class:`ManifestError` naming the first file that is missing or differs.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if kind is not None and manifest.get("kind") != kind:
        raise ManifestError(f"{directory} holds a {manifest.get('kind')!r} artifact, expected {kind!r}")
    for rel, entry in manifest["files"].items():
        full = directory / rel
        if not full.is_file():
            raise ManifestError(f"{full} is listed in the manifest but missing")
        if full.stat().st_size != entry.get("size"):
            raise ManifestError(f"{full} has size {full.stat().st_size}, manifest says {entry.get('size')}")
        actual = sha256_file(full)
        if actual != entry.get("sha256"):
            raise ManifestError(f"{full} sha256 {actual} does not match the manifest ({entry.get('sha256')})")
    return manifest
