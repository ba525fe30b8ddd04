"""Push a folder of model files to the Hugging Face Hub (token from ``HF_TOKEN``; never logged)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("ragtune.export.hub")


class HubPushError(RuntimeError):
    """The Hub upload failed or was not configured (missing repo id or token)."""


def push_folder(folder: str | os.PathLike[str], repo_id: str, *, private: bool = True, api: Any = None,
                token: str | None = None, commit_message: str = "ragtune: upload GGUF export") -> str:
    """Create ``repo_id`` if needed and upload ``folder``; return the commit id.

    Args:
        folder: local folder to upload (hidden files are skipped).
        repo_id: ``namespace/name`` of the model repo.
        private: create the repo as private.
        api: an ``huggingface_hub.HfApi``-like client; default a real one.
        token: Hub token; default ``HF_TOKEN`` from the environment.
    """
    if not repo_id:
        raise HubPushError("hub_repo is not set")
    token = token or os.environ.get("HF_TOKEN") or None
    if token is None:
        raise HubPushError("pushing to the Hub needs a token in HF_TOKEN")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
        info = api.upload_folder(folder_path=str(Path(folder)), repo_id=repo_id, repo_type="model", token=token,
                                 commit_message=commit_message, ignore_patterns=[".*", "**/.*"])
    except Exception as exc:  # huggingface_hub raises many error types (HTTP, auth, network); all mean "failed"
        raise HubPushError(f"upload of {folder} to {repo_id} failed: {exc}") from exc
    commit = getattr(info, "oid", None) or str(info)
    log.info("event=hub_push repo=%s commit=%s", repo_id, commit)
    return commit
