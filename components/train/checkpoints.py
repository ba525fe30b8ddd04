"""Checkpoint stores: where training checkpoints go, how the newest complete one is found, and rotation.

A checkpoint is the folder ``transformers.Trainer`` writes (``checkpoint-<step>``: adapter, optimizer, scheduler,
RNG and trainer state). It counts as *complete* only once its ``manifest.json`` (components.manifest, written last)
exists and every file matches it; a folder without one, or with a truncated or altered file, is a partial write
(preemption or a crash mid-save) and is skipped -- and discarded -- never loaded.

Two stores share one interface:

* :class:`LocalCheckpointStore` -- ``<location>/<run_name>/checkpoint-<step>/`` on a directory or PVC (default).
* :class:`HubCheckpointStore` -- the private repo ``{namespace}/{model}-checkpoint`` on the Hugging Face Hub,
  ``<run_name>/checkpoint-<step>/`` inside it; files are uploaded first and the manifest last.

Both keep at most ``save_total_limit`` complete checkpoints per run (oldest deleted first).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from components.data.events import log_event
from components.manifest import MANIFEST_NAME, ManifestError, read_manifest, verify_manifest, write_manifest

__all__ = ["CheckpointStore", "LocalCheckpointStore", "HubCheckpointStore", "CheckpointStoreError",
           "finalize_checkpoint", "checkpoint_step", "CHECKPOINT_KIND"]

log = logging.getLogger("ragtune.train")

CHECKPOINT_KIND = "checkpoint"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


class CheckpointStoreError(RuntimeError):
    """The checkpoint store cannot be used (bad location, missing token, Hub failure)."""


def checkpoint_step(name: str) -> int | None:
    """``checkpoint-12`` -> 12; anything else -> None."""
    match = _CKPT.match(name)
    return int(match.group(1)) if match else None


def finalize_checkpoint(directory: str | os.PathLike[str], *, step: int, meta: dict[str, Any]) -> None:
    """Mark a fully written checkpoint folder complete by writing its manifest (the last file written)."""
    write_manifest(directory, kind=CHECKPOINT_KIND, meta={**meta, "step": step})


def check_complete(directory: Path, step: int) -> str | None:
    """Return None when ``directory`` is a complete checkpoint for ``step``, else why it is not."""
    if not (directory / MANIFEST_NAME).is_file():
        return "no manifest (partially written)"
    try:
        manifest = verify_manifest(directory, kind=CHECKPOINT_KIND)
    except ManifestError as exc:
        return str(exc)
    if manifest.get("meta", {}).get("step") != step:
        return f"manifest is for step {manifest.get('meta', {}).get('step')}, folder says {step}"
    return None


class CheckpointStore(Protocol):
    """What the trainer needs from a store."""

    #: where Trainer writes checkpoint-<step> folders before :meth:`commit`
    staging_dir: Path

    def prepare(self) -> None:
        """Create what the store needs (folder, repo); fail early with a clear error."""

    def latest_complete(self) -> tuple[int, Path] | None:
        """The newest complete checkpoint as ``(step, local folder)``; partial ones are discarded on the way."""

    def commit(self, step: int) -> None:
        """Publish ``staging_dir/checkpoint-<step>`` (already finalized) to the store."""

    def prune(self, keep: int) -> list[int]:
        """Delete all but the ``keep`` newest complete checkpoints; return the deleted steps."""

    def describe(self) -> str:
        """Where the checkpoints live, for logs and reports (no secrets)."""


class LocalCheckpointStore:
    """Checkpoints in ``<root>/<run_name>/`` on a local directory or mounted PVC."""

    def __init__(self, root: str | os.PathLike[str], run_name: str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.run_name = run_name
        self.staging_dir = self.root / run_name

    def describe(self) -> str:
        return f"local:{self.staging_dir}"

    def prepare(self) -> None:
        try:
            self.staging_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointStoreError(f"checkpoint_location: cannot create {self.staging_dir}: {exc}") from exc
        if not os.access(self.staging_dir, os.W_OK):
            raise CheckpointStoreError(f"checkpoint_location: {self.staging_dir} is not writable")

    def _folders(self) -> list[tuple[int, Path]]:
        if not self.staging_dir.is_dir():
            return []
        found = []
        for child in self.staging_dir.iterdir():
            step = checkpoint_step(child.name)
            if step is not None and child.is_dir():
                found.append((step, child))
        return sorted(found)

    def complete_steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first (verifies every manifest)."""
        return [step for step, path in self._folders() if check_complete(path, step) is None]

    def latest_complete(self) -> tuple[int, Path] | None:
        for step, path in reversed(self._folders()):
            problem = check_complete(path, step)
            if problem is None:
                return step, path
            log_event(log, "checkpoint_skipped", level=logging.WARNING, store=self.describe(), step=step,
                      reason=problem)
            shutil.rmtree(path, ignore_errors=True)
        return None

    def commit(self, step: int) -> None:
        # Trainer wrote straight into the store; the manifest written by finalize_checkpoint completes it.
        path = self.staging_dir / f"checkpoint-{step}"
        problem = check_complete(path, step)
        if problem is not None:
            raise CheckpointStoreError(f"checkpoint {path} is not complete after saving: {problem}")

    def prune(self, keep: int) -> list[int]:
        complete = self.complete_steps()
        deleted = complete[:-keep] if keep > 0 else complete
        for step in deleted:
            shutil.rmtree(self.staging_dir / f"checkpoint-{step}", ignore_errors=True)
        # Partial folders older than the newest complete one can never be resumed: remove them too.
        newest = complete[-1] if complete else None
        for step, path in self._folders():
            if newest is not None and step < newest and step not in complete:
                shutil.rmtree(path, ignore_errors=True)
        return deleted


class HubCheckpointStore:
    """Checkpoints in a private Hub repo (``{namespace}/{model}-checkpoint``), under ``<run_name>/``.

    ``api`` is a ``huggingface_hub.HfApi`` (built from ``HF_TOKEN`` when not given); only these of its methods are
    used: ``create_repo``, ``list_repo_files``, ``upload_folder``, ``upload_file``, ``delete_folder`` and
    ``snapshot_download``.
    """

    def __init__(self, repo_id: str, run_name: str, staging_root: str | os.PathLike[str], api: Any = None,
                 token: str | None = None) -> None:
        self.repo_id = repo_id
        self.run_name = run_name
        self.staging_root = Path(staging_root).expanduser().resolve()
        self.staging_dir = self.staging_root / run_name
        if api is None:
            token = token or os.environ.get("HF_TOKEN")
            if not token:
                raise CheckpointStoreError("checkpoint_store: 'hub' needs a token in the HF_TOKEN environment variable")
            from huggingface_hub import HfApi

            api = HfApi(token=token)
        self.api = api

    def describe(self) -> str:
        return f"hub:{self.repo_id}/{self.run_name}"

    def _remote(self, step: int) -> str:
        return f"{self.run_name}/checkpoint-{step}"

    def prepare(self) -> None:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.api.create_repo(repo_id=self.repo_id, private=True, exist_ok=True, repo_type="model")
        except Exception as exc:  # HfHubHTTPError, connection errors: surface as one clear message
            raise CheckpointStoreError(f"checkpoint_store: cannot create or open Hub repo {self.repo_id}: {exc}") from exc

    def _remote_steps(self) -> tuple[list[int], list[int]]:
        """(steps with a manifest, steps with files but no manifest), both ascending."""
        files = self.api.list_repo_files(repo_id=self.repo_id, repo_type="model")
        prefix = f"{self.run_name}/"
        with_manifest, seen = set(), set()
        for name in files:
            if not name.startswith(prefix):
                continue
            parts = name[len(prefix):].split("/")
            step = checkpoint_step(parts[0]) if len(parts) > 1 else None
            if step is None:
                continue
            seen.add(step)
            if parts[1:] == [MANIFEST_NAME]:
                with_manifest.add(step)
        return sorted(with_manifest), sorted(seen - with_manifest)

    def latest_complete(self) -> tuple[int, Path] | None:
        complete, partial = self._remote_steps()
        for step in partial:
            log_event(log, "checkpoint_skipped", level=logging.WARNING, store=self.describe(), step=step,
                      reason="no manifest (partially uploaded)")
            self._delete(step)
        for step in reversed(complete):
            local = self.staging_dir / f"checkpoint-{step}"
            shutil.rmtree(local, ignore_errors=True)
            self.api.snapshot_download(repo_id=self.repo_id, repo_type="model",
                                       allow_patterns=[f"{self._remote(step)}/*"], local_dir=str(self.staging_root))
            problem = check_complete(local, step)
            if problem is None:
                return step, local
            log_event(log, "checkpoint_skipped", level=logging.WARNING, store=self.describe(), step=step,
                      reason=problem)
            shutil.rmtree(local, ignore_errors=True)
            self._delete(step)
        return None

    def commit(self, step: int) -> None:
        local = self.staging_dir / f"checkpoint-{step}"
        problem = check_complete(local, step)
        if problem is not None:
            raise CheckpointStoreError(f"checkpoint {local} is not complete after saving: {problem}")
        remote = self._remote(step)
        # Files first, the manifest last: a reader never sees a manifest without every file it lists.
        self.api.upload_folder(repo_id=self.repo_id, repo_type="model", folder_path=str(local), path_in_repo=remote,
                               ignore_patterns=[MANIFEST_NAME], commit_message=f"{self.run_name}: checkpoint {step}")
        self.api.upload_file(repo_id=self.repo_id, repo_type="model", path_or_fileobj=str(local / MANIFEST_NAME),
                             path_in_repo=f"{remote}/{MANIFEST_NAME}",
                             commit_message=f"{self.run_name}: checkpoint {step} complete")

    def _delete(self, step: int) -> None:
        self.api.delete_folder(repo_id=self.repo_id, repo_type="model", path_in_repo=self._remote(step),
                               commit_message=f"{self.run_name}: drop checkpoint {step}")

    def prune(self, keep: int) -> list[int]:
        complete, _ = self._remote_steps()
        deleted = complete[:-keep] if keep > 0 else complete
        for step in deleted:
            self._delete(step)
        # Local copies only serve the upload; keep the newest for a fast local resume.
        for child in self.staging_dir.glob("checkpoint-*"):
            step = checkpoint_step(child.name)
            if step is not None and complete and step < complete[-1]:
                shutil.rmtree(child, ignore_errors=True)
        return deleted


def read_checkpoint_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` table of a checkpoint's manifest (run name, fingerprint, config, step)."""
    return read_manifest(directory).get("meta", {})
