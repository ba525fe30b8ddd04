"""LoRA sanity on a real model (SmolLM2-135M from the packaged GGUF, CPU): the loss falls, the LoRA weights move,
the base weights do not, the merged model is base + scale * B @ A and loads back with its chat template.

The checkpoints of this run go to the hub store through ``hub_standin`` -- a stand-in for huggingface_hub's HfApi,
because the Hub cannot be reached from tests; everything up to that boundary is the real code path.
"""

from __future__ import annotations

import json

import pytest

from components.manifest import verify_manifest
from components.train.config import TrainConfig
from components.train.trainer import train
from tests.components.train.hub_standin import HubStandIn


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, capitals_data):
    root = tmp_path_factory.mktemp("lora")
    mp = pytest.MonkeyPatch()
    mp.setenv("RAGTUNE_HOME", str(root / "home"))  # local copies of hub checkpoints go here, not into the repo
    hub = HubStandIn(root / "hub")
    cfg = TrainConfig(
        max_steps=30, max_seq_length=64, per_device_train_batch_size=2, gradient_accumulation_steps=1,
        learning_rate=2e-3, warmup_steps=2, save_steps=10, save_total_limit=2, seed=5,
        checkpoint_store="hub", hub_namespace="tester", run_name="lora-sanity",
    )
    try:
        result = train(cfg, capitals_data, root / "out", hub_api=hub)
    finally:
        mp.undo()
    assert (root / "home" / "checkpoints" / "hub" / "tester--SmolLM2-135M-Instruct-checkpoint").is_dir()
    return cfg, result, hub


@pytest.mark.slow
def test_loss_falls_and_report_is_complete(lora_run):
    cfg, result, _ = lora_run
    report = json.loads(result.report_path.read_text())
    assert report == {**report, "global_step": 30, "backend": "hf", "device": "cpu", "optimizer": "adamw_torch"}
    losses = [p["loss"] for p in report["loss_curve"]]
    assert len(losses) == 30
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, f"loss did not fall: first5={first:.3f} last5={last:.3f}"
    assert report["tokens_per_second"] > 0 and report["train_tokens"] > 30 * 2 * 20
    assert report["peak_memory_bytes"] > 100 * 2**20
    # LoRA r=16 on all 7 projections of a 30-layer, 576-wide model: A (r x in) + B (out x r) per module
    per_layer = 16 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
    assert report["trainable_params"] == 30 * per_layer
    assert report["trainable_percent"] == pytest.approx(100 * report["trainable_params"] / report["total_params"],
                                                        abs=1e-3)
    verify_manifest(result.report_path.parent, kind="train-report")


@pytest.mark.slow
def test_lora_weights_move_base_weights_do_not(lora_run):
    import torch
    from safetensors.torch import load_file

    from components.train.base_model import load_base_model

    cfg, result, _ = lora_run
    verify_manifest(result.adapter_dir, kind="lora-adapter")
    verify_manifest(result.merged_dir, kind="hf-model")
    adapter = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)  # only LoRA weights are saved, never base weights
    b_mats = {k: v for k, v in adapter.items() if "lora_B" in k}
    assert len(b_mats) == 30 * 7 and all(v.abs().max() > 0 for v in b_mats.values())  # B starts at zero

    base, _ = load_base_model(None, dtype=torch.float32)
    base_sd = base.state_dict()
    merged = {}
    for shard in sorted(result.merged_dir.glob("*.safetensors")):
        merged.update(load_file(str(shard)))
    scale = cfg.lora_alpha / cfg.lora_r
    changed = 0
    for name, base_w in base_sd.items():
        key = name if name in merged else None
        if key is None:
            assert name == "lm_head.weight"  # tied to the embeddings, stored once
            continue
        module = name.rsplit(".", 1)[0]
        lora_a = adapter.get(f"base_model.model.{module}.lora_A.weight")
        if lora_a is None:
            assert torch.equal(merged[key], base_w), f"{name} changed but has no adapter"
        else:
            lora_b = adapter[f"base_model.model.{module}.lora_B.weight"]
            expected = base_w + scale * (lora_b @ lora_a)
            assert torch.allclose(merged[key], expected, atol=1e-5), name
            assert not torch.equal(merged[key], base_w)
            changed += 1
    assert changed == 30 * 7


@pytest.mark.slow
def test_merged_model_loads_with_its_chat_template(lora_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, result, _ = lora_run
    config = json.loads((result.merged_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(result.merged_dir)
    assert "<|im_start|>" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(result.merged_dir, dtype=torch.float32)
    prompt = tokenizer.apply_chat_template([{"role": "system", "content": "Answer in one sentence."},
                                            {"role": "user", "content": "What is the capital of Norway?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.startswith("The capital of Norway is")  # the trained answer pattern


@pytest.mark.slow
def test_hub_store_received_rotated_private_checkpoints(lora_run):
    """Up to the huggingface_hub boundary (stand-in API, see the module docstring)."""
    _, result, hub = lora_run
    repo = "tester/SmolLM2-135M-Instruct-checkpoint"
    assert hub.private == {repo: True}
    files = hub.list_repo_files(repo, repo_type="model")
    assert sorted({f.split("/")[1] for f in files}) == ["checkpoint-20", "checkpoint-30"]  # save_total_limit=2
    assert "lora-sanity/checkpoint-30/manifest.json" in files
    assert "lora-sanity/checkpoint-30/optimizer.pt" in files
    assert ("delete_folder", "lora-sanity/checkpoint-10") in hub.calls
