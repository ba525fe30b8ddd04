"""A stand-in for ``huggingface_hub.HfApi`` at the Hub boundary, used by the hub checkpoint store tests."""

from __future__ import annotations

import fnmatch
import inspect
import shutil
from pathlib import Path


class HubStandIn:
    """Stand-in for ``huggingface_hub.HfApi`` at the Hub boundary (the Hub cannot be reached from tests).

    It keeps repos as folders under ``root`` and implements exactly the HfApi methods the hub checkpoint store calls,
    with the same keyword arguments, so everything up to the network call is the real code path: every call is first
    bound to the real ``HfApi`` method's signature, so a wrong argument fails here as it would against the Hub.
    ``calls`` records (method, path) in order, to check upload order (files first, manifest last).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple[str, str]] = []
        self.private: dict[str, bool] = {}

    @staticmethod
    def _bind(method: str, *args, **kwargs) -> None:
        from huggingface_hub import HfApi

        inspect.signature(getattr(HfApi, method)).bind(None, *args, **kwargs)

    def _repo(self, repo_id: str) -> Path:
        if repo_id not in self.private:
            raise RuntimeError(f"404 repo {repo_id} not found")
        return self.root / repo_id

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None):
        self._bind("create_repo", repo_id, private=private, exist_ok=exist_ok, repo_type=repo_type)
        assert repo_type == "model"
        if repo_id in self.private and not exist_ok:
            raise RuntimeError("409 exists")
        self.private.setdefault(repo_id, bool(private))
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        self.calls.append(("create_repo", repo_id))

    def list_repo_files(self, repo_id, *, repo_type=None):
        self._bind("list_repo_files", repo_id, repo_type=repo_type)
        repo = self._repo(repo_id)
        return sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())

    def upload_folder(self, *, repo_id, folder_path, path_in_repo, repo_type=None, ignore_patterns=(),
                      commit_message=""):
        self._bind("upload_folder", repo_id=repo_id, folder_path=folder_path, path_in_repo=path_in_repo,
                   repo_type=repo_type, ignore_patterns=ignore_patterns, commit_message=commit_message)
        dest = self._repo(repo_id) / path_in_repo
        for src in Path(folder_path).rglob("*"):
            rel = src.relative_to(folder_path)
            if src.is_file() and not any(fnmatch.fnmatch(str(rel), pat) for pat in ignore_patterns):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
                self.calls.append(("upload", f"{path_in_repo}/{rel}"))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, commit_message=""):
        self._bind("upload_file", path_or_fileobj=path_or_fileobj, path_in_repo=path_in_repo, repo_id=repo_id,
                   repo_type=repo_type, commit_message=commit_message)
        dest = self._repo(repo_id) / path_in_repo
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path_or_fileobj, dest)
        self.calls.append(("upload", path_in_repo))

    def delete_folder(self, *, path_in_repo, repo_id, repo_type=None, commit_message=""):
        self._bind("delete_folder", path_in_repo=path_in_repo, repo_id=repo_id, repo_type=repo_type,
                   commit_message=commit_message)
        shutil.rmtree(self._repo(repo_id) / path_in_repo)
        self.calls.append(("delete_folder", path_in_repo))

    def snapshot_download(self, *, repo_id, repo_type=None, allow_patterns=None, local_dir=None):
        self._bind("snapshot_download", repo_id=repo_id, repo_type=repo_type, allow_patterns=allow_patterns,
                   local_dir=local_dir)
        repo = self._repo(repo_id)
        for rel in self.list_repo_files(repo_id):
            if allow_patterns is None or any(fnmatch.fnmatch(rel, pat) for pat in allow_patterns):
                (Path(local_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / rel, Path(local_dir) / rel)
        self.calls.append(("snapshot_download", ",".join(allow_patterns or [])))
        return str(local_dir)
