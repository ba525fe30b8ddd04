"""Resume equivalence and preemption, with real training processes (SmolLM2-135M from the packaged GGUF, CPU).

An uninterrupted 6-step run and a run SIGKILLed after its step-4 checkpoint then resumed to step 6 must produce
bit-identical adapters; a truncated newest checkpoint must be skipped; SIGTERM must save a checkpoint and exit 143.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

TINY = [
    "max_steps=6", "save_steps=2", "max_seq_length=64", "per_device_train_batch_size=2",
    "gradient_accumulation_steps=1", "warmup_steps=1", "learning_rate=1e-3", "run_name=resume-test", "seed=11",
]


def train_cmd(data: Path, out: Path, ckpt: Path, extra: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "components.train", "--data", str(data), "--out", str(out),
           "--set", f"checkpoint_location={ckpt}"]
    for item in [*TINY, *extra]:
        cmd += ["--set", item]
    return cmd


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAGTUNE_LOG_LEVEL": "INFO"}


def run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    return proc


def adapter_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.mark.slow
def test_killed_run_resumes_to_identical_adapter_and_skips_truncated_checkpoint(tmp_path, capitals_data):
    # A: uninterrupted.
    a = run(train_cmd(capitals_data, tmp_path / "out-a", tmp_path / "ckpt-a"))
    assert a.returncode == 0, a.stderr[-3000:]
    report_a = json.loads((tmp_path / "out-a" / "report.json").read_text())
    assert report_a["global_step"] == 6 and report_a["resumed_from_step"] is None

    # B: same run, SIGKILL as soon as the step-4 checkpoint is complete (its manifest is written last).
    ckpt_b = tmp_path / "ckpt-b"
    marker = ckpt_b / "resume-test" / "checkpoint-4" / "manifest.json"
    proc = subprocess.Popen(train_cmd(capitals_data, tmp_path / "out-b", ckpt_b), cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert proc.poll() is None, f"trainer exited early: {proc.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no step-4 checkpoint within 600 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "out-b" / "adapter").exists()
    run_dir = ckpt_b / "resume-test"
    assert not (run_dir / "checkpoint-6" / "manifest.json").exists()

    # The newest checkpoint in the store is a truncated copy: it must be skipped, never loaded.
    shutil.rmtree(run_dir / "checkpoint-6", ignore_errors=True)
    shutil.copytree(run_dir / "checkpoint-4", run_dir / "checkpoint-6")
    weights = run_dir / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])

    c = run(train_cmd(capitals_data, tmp_path / "out-b", ckpt_b))
    assert c.returncode == 0, c.stderr[-3000:]
    assert "event=checkpoint_skipped" in c.stderr and "step=6" in c.stderr
    report_c = json.loads((tmp_path / "out-b" / "report.json").read_text())
    assert report_c["resumed_from_step"] == 4 and report_c["global_step"] == 6
    assert [p["step"] for p in report_c["loss_curve"]] == [5, 6]
    trainer_state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert trainer_state["global_step"] == 6

    tensors_a, tensors_c = adapter_tensors(tmp_path / "out-a" / "adapter"), adapter_tensors(tmp_path / "out-b" / "adapter")
    assert tensors_a.keys() == tensors_c.keys() and len(tensors_a) == 30 * 7 * 2
    for name in tensors_a:
        assert tensors_a[name].equal(tensors_c[name]), f"{name} differs after resume"
    # and the loss at steps 5 and 6 matches the uninterrupted run exactly
    assert report_a["loss_curve"][-2:] == report_c["loss_curve"]
    # the store kept at most 3 complete checkpoints
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_then_exits(tmp_path, capitals_data):
    ckpt = tmp_path / "ckpt"
    cmd = train_cmd(capitals_data, tmp_path / "out", ckpt, ["max_steps=40", "save_steps=1000", "run_name=preempt"])
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "event=train_log step=2 " in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[1]
    log = "".join(seen) + rest
    assert proc.returncode == 143, log[-3000:]
    assert "Traceback" not in log
    saved = sorted((ckpt / "preempt").glob("checkpoint-*"))
    assert len(saved) == 1, saved
    step = int(saved[0].name.split("-")[1])
    assert 2 <= step < 40  # saved because of SIGTERM, long before save_steps=1000
    from components.manifest import verify_manifest

    assert verify_manifest(saved[0], kind="checkpoint")["meta"]["step"] == step
    assert json.loads((saved[0] / "trainer_state.json").read_text())["global_step"] == step
    assert f"event=checkpoint_saved step={step}" in log and "preempted by SIGTERM" in log
