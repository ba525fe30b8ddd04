"""Checkpoint stores: completeness (manifest last), skipping partial/truncated checkpoints, rotation, Hub layout."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.train.checkpoints import (
    CheckpointStoreError,
    HubCheckpointStore,
    LocalCheckpointStore,
    finalize_checkpoint,
)


def write_checkpoint(folder: Path, step: int, *, finalize: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (folder / "optimizer.pt").write_bytes(os.urandom(8192))
    (folder / "trainer_state.json").write_text(f'{{"global_step": {step}}}')
    if finalize:
        finalize_checkpoint(folder, step=step, meta={"run_name": "r"})
    return folder


def test_local_store_skips_partial_and_truncated_and_returns_newest_complete(tmp_path, caplog):
    store = LocalCheckpointStore(tmp_path / "ckpt", "run-a")
    store.prepare()
    for step in (2, 4):
        write_checkpoint(store.staging_dir / f"checkpoint-{step}", step)
    # step 6: written completely, then truncated (e.g. a disk filling up, a bad copy)
    six = write_checkpoint(store.staging_dir / "checkpoint-6", 6)
    data = (six / "adapter_model.safetensors").read_bytes()
    (six / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    # step 8: killed mid-save, the manifest was never written
    write_checkpoint(store.staging_dir / "checkpoint-8", 8, finalize=False)
    # a checkpoint copied under another step's name is not trusted either
    write_checkpoint(store.staging_dir / "checkpoint-12", 4)

    with caplog.at_level("WARNING", logger="ragtune.train"):
        found = store.latest_complete()
    assert found == (4, store.staging_dir / "checkpoint-4")
    skipped = [r.getMessage() for r in caplog.records if "checkpoint_skipped" in r.getMessage()]
    assert [m.split("step=")[1].split()[0] for m in skipped] == ["12", "8", "6"]
    assert any("sha256" in m or "size" in m for m in skipped if "step=6" in m)
    assert any("no manifest" in m for m in skipped if "step=8" in m)
    # the partial ones are gone, so a resumed run cannot trip over them later
    assert sorted(p.name for p in store.staging_dir.iterdir()) == ["checkpoint-2", "checkpoint-4"]


def test_local_store_keeps_at_most_limit_complete_checkpoints(tmp_path):
    store = LocalCheckpointStore(tmp_path, "run")
    store.prepare()
    for step in (1, 2, 3, 4, 5):
        write_checkpoint(store.staging_dir / f"checkpoint-{step}", step)
        store.commit(step)
        store.prune(3)
    assert sorted(p.name for p in store.staging_dir.iterdir()) == ["checkpoint-3", "checkpoint-4", "checkpoint-5"]
    assert store.latest_complete()[0] == 5
    assert LocalCheckpointStore(tmp_path, "other-run").latest_complete() is None


def test_local_store_refuses_to_commit_an_incomplete_checkpoint(tmp_path):
    store = LocalCheckpointStore(tmp_path, "run")
    store.prepare()
    write_checkpoint(store.staging_dir / "checkpoint-3", 3, finalize=False)
    with pytest.raises(CheckpointStoreError, match="not complete"):
        store.commit(3)


def test_local_store_unwritable_location_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointStoreError, match="checkpoint_location"):
        LocalCheckpointStore(blocker, "run").prepare()


def test_hub_store_needs_hf_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(CheckpointStoreError, match="HF_TOKEN"):
        HubCheckpointStore("me/model-checkpoint", "run", tmp_path)


def test_hub_store_uploads_manifest_last_rotates_and_resumes(tmp_path, hub_standin):
    """Tested up to the huggingface_hub boundary: ``hub_standin`` replaces HfApi (no network here)."""
    store = HubCheckpointStore("me/SmolLM2-135M-Instruct-checkpoint", "run-1", tmp_path / "staging", api=hub_standin)
    store.prepare()
    assert hub_standin.private["me/SmolLM2-135M-Instruct-checkpoint"] is True
    for step in (10, 20, 30, 40):
        write_checkpoint(store.staging_dir / f"checkpoint-{step}", step)
        store.commit(step)
        store.prune(3)
        uploads = [path for call, path in hub_standin.calls if call == "upload" and f"checkpoint-{step}/" in path]
        assert uploads[-1] == f"run-1/checkpoint-{step}/manifest.json"  # the completion marker goes last
        assert len(uploads) == 4
    remote = hub_standin.list_repo_files("me/SmolLM2-135M-Instruct-checkpoint", repo_type="model")
    assert sorted({p.split("/")[1] for p in remote}) == ["checkpoint-20", "checkpoint-30", "checkpoint-40"]

    # A partial upload (files without the manifest) of step 50 and a corrupted step 40 on the Hub: both skipped.
    partial = write_checkpoint(tmp_path / "p50", 50, finalize=False)
    hub_standin.upload_folder(repo_id=store.repo_id, folder_path=str(partial), path_in_repo="run-1/checkpoint-50",
                              repo_type="model")
    corrupt = hub_standin.root / store.repo_id / "run-1/checkpoint-40/optimizer.pt"
    corrupt.write_bytes(corrupt.read_bytes()[:100])

    fresh = HubCheckpointStore(store.repo_id, "run-1", tmp_path / "new-pod", api=hub_standin)
    step, local = fresh.latest_complete()
    assert step == 30 and local == (tmp_path / "new-pod" / "run-1" / "checkpoint-30").resolve()
    assert (local / "adapter_model.safetensors").is_file()
    remote = hub_standin.list_repo_files(store.repo_id, repo_type="model")
    assert sorted({p.split("/")[1] for p in remote}) == ["checkpoint-20", "checkpoint-30"]
