"""Train component inputs: the typed config, the base model reference, backend choice, and encode_chat's labels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components.data.fields import ConfigError, describe, parse_assignments
from components.data.tokenize import IGNORE_INDEX, ChatTemplateError, encode_chat
from components.train.backends import BackendError, choose_runtime
from components.train.base_model import BaseModelError, default_base_model, resolve_base_model
from components.train.config import DEFAULT_TARGET_MODULES, TrainConfig

REPO = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------------------------------- config


def test_defaults_are_the_baseline():
    cfg = TrainConfig()
    assert (cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout) == (16, 16, 0.0)
    assert cfg.target_modules == DEFAULT_TARGET_MODULES == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"]
    assert (cfg.max_seq_length, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (2048, 2, 4)
    assert (cfg.learning_rate, cfg.lr_scheduler_type, cfg.warmup_steps, cfg.weight_decay) == (2e-4, "linear", 20,
                                                                                              0.001)
    assert (cfg.num_train_epochs, cfg.max_steps, cfg.save_steps, cfg.save_total_limit) == (1.0, -1, 100, 3)
    assert (cfg.backend, cfg.optim, cfg.checkpoint_store) == ("auto", "auto", "local")


def test_every_field_has_help_text():
    rows = describe(TrainConfig)
    assert len(rows) > 25
    assert all(row["help"] for row in rows), [row["name"] for row in rows if not row["help"]]


def test_from_dict_maps_cli_strings_one_to_one():
    cfg = TrainConfig.from_dict(parse_assignments([
        "max_steps=5", "learning_rate=1e-3", "target_modules=q_proj,v_proj", "gradient_checkpointing=none",
        "backend=hf", "resume=false", "lora_dropout=0.05",
    ]))
    assert (cfg.max_steps, cfg.learning_rate, cfg.target_modules) == (5, 1e-3, ["q_proj", "v_proj"])
    assert (cfg.gradient_checkpointing, cfg.backend, cfg.resume, cfg.lora_dropout) == (None, "hf", False, 0.05)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"lora_r": "0"}, "lora_r"),
        ({"lora_r": "sixteen"}, "lora_r"),
        ({"backend": "tensorflow"}, "backend"),
        ({"learning_rate": "-1"}, "learning_rate"),
        ({"lora_dropout": "1.5"}, "lora_dropout"),
        ({"max_steps": "0"}, "max_steps"),
        ({"resume": "maybe"}, "resume"),
        ({"checkpoint_store": "s3"}, "checkpoint_store"),
        ({"checkpoint_store": "hub"}, "hub_namespace"),
        ({"target_modules": ""}, "target_modules"),
        ({"run_name": "../escape"}, "run_name"),
        ({"lora_rank": "8"}, "lora_rank"),
    ],
)
def test_invalid_config_value_is_named(values, field):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")


def test_unknown_key_suggests_the_close_field():
    with pytest.raises(ConfigError, match="did you mean 'lora_r'"):
        TrainConfig.from_dict({"lora_rr": 8})


def test_config_file_with_overrides(tmp_path):
    path = tmp_path / "ft.yaml"
    path.write_text("train:\n  max_steps: 7\n  lora_r: 8\ndata:\n  max_examples: 3\n")
    cfg = TrainConfig.from_file(path, {"lora_r": "4"})
    assert (cfg.max_steps, cfg.lora_r) == (7, 4)


def test_fingerprint_ignores_where_checkpoints_go():
    a = TrainConfig(max_steps=5)
    b = TrainConfig(max_steps=5, checkpoint_location="/elsewhere", save_steps=1)
    c = TrainConfig(max_steps=6)
    assert a.fingerprint("d") == b.fingerprint("d") != c.fingerprint("d")
    assert a.fingerprint("d") != a.fingerprint("other-data")
    assert c.training_fields_differing(a.to_dict()) == ["max_steps"]


# ------------------------------------------------------------------------------------------------- base model


def test_default_base_model_is_the_packaged_gguf():
    path = Path(default_base_model())
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    ref = resolve_base_model("")
    assert ref.gguf_file == path.name and ref.is_local and ref.name == "SmolLM2-135M-Instruct"


@pytest.mark.parametrize("model", ["/nope/model.gguf", "./missing-folder", "not-a-hub-id"])
def test_missing_base_model_is_a_clear_error(model):
    with pytest.raises(BaseModelError, match="base_model: .*not found"):
        resolve_base_model(model)


def test_folder_without_config_points_at_its_ggufs(tmp_path):
    (tmp_path / "m.Q8_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(BaseModelError, match="set gguf_file"):
        resolve_base_model(str(tmp_path))
    with pytest.raises(BaseModelError, match="gguf_file: other.gguf not found"):
        resolve_base_model(str(tmp_path), "other.gguf")
    assert resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct").is_local is False


def test_missing_base_model_fails_before_loading_anything(tmp_path, capitals_data):
    """CLI: exit 2, one line naming base_model, no traceback, and torch never imported."""
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['x', '--data', {str(capitals_data)!r}, '--out', {str(tmp_path / 'o')!r},"
        " '--set', 'base_model=/nope/model.gguf']\n"
        "try:\n    runpy.run_module('components.train', run_name='__main__')\n"
        "except SystemExit:\n"
        "    print('LOADED', [m for m in ('torch', 'transformers', 'trl', 'peft') if m in sys.modules])\n"
        "    raise\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "train: error: base_model: '/nope/model.gguf' not found" in proc.stderr
    assert "LOADED []" in proc.stdout


def test_unprepared_data_dir_fails_before_any_model_loads(tmp_path):
    from components.data.sources import DataError
    from components.train.trainer import train

    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match="data_dir: .*not a prepared dataset"):
        train(TrainConfig(max_steps=1), tmp_path, tmp_path / "out")


def test_training_modules_do_not_import_transformers_at_import_time():
    """unsloth must be imported before transformers/trl/peft, so importing our modules must not pull them in."""
    code = ("import sys, components.train.trainer, components.train.component, components.train.backends;"
            "print([m for m in ('transformers', 'trl', 'peft', 'unsloth') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------- backend


def test_auto_backend_on_cpu_is_hf_full_precision():
    rt = choose_runtime(TrainConfig())
    assert (rt.backend, rt.device, rt.quantized, rt.bf16, rt.fp16) == ("hf", "cpu", False, False, False)
    assert rt.optim == "adamw_torch" and rt.gradient_checkpointing is False


@pytest.mark.parametrize(
    ("values", "field"),
    [({"backend": "unsloth"}, "backend"), ({"mixed_precision": "bf16"}, "mixed_precision"),
     ({"optim": "adamw_8bit"}, "optim")],
)
def test_gpu_only_settings_on_cpu_are_named(values, field):
    with pytest.raises(BackendError, match=f"^{field}:"):
        choose_runtime(TrainConfig.from_dict(values))


# ------------------------------------------------------------------------------------------------ encode_chat


def labelled_text(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX])


def test_encode_chat_labels_assistant_tokens_only(smol_tokenizer):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
    enc = encode_chat(smol_tokenizer, messages, max_length=512)
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"])
    full = smol_tokenizer.apply_chat_template(messages, tokenize=False)
    assert smol_tokenizer.decode(enc["input_ids"]) == full  # the model's own (ChatML) template, not a lookalike
    assert "<|im_start|>user" in full
    # Exactly the two replies plus their end-of-turn markers carry loss.
    assert labelled_text(smol_tokenizer, enc) == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    for token, label in zip(enc["input_ids"], enc["labels"]):
        assert label in (IGNORE_INDEX, token)
    user_ids = smol_tokenizer("Capital of France?", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(enc["input_ids"])) if enc["input_ids"][i:i + len(user_ids)] == user_ids)
    assert all(lab == IGNORE_INDEX for lab in enc["labels"][start:start + len(user_ids)])


def test_encode_chat_truncates_and_honours_a_template_override(smol_tokenizer):
    messages = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    enc = encode_chat(smol_tokenizer, messages, max_length=32)
    assert len(enc["input_ids"]) == 32 and set(enc["labels"]) == {IGNORE_INDEX}
    template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant] {% endif %}")
    enc = encode_chat(smol_tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                      max_length=64, chat_template=template)
    assert smol_tokenizer.decode(enc["input_ids"]) == "[user] hi\n[assistant] yo\n"
    assert labelled_text(smol_tokenizer, enc).strip() == "yo"


def test_encode_chat_without_any_template_names_chat_template(smol_tokenizer):
    import copy

    bare = copy.deepcopy(smol_tokenizer)
    bare.chat_template = None
    with pytest.raises(ChatTemplateError, match="^chat_template:"):
        encode_chat(bare, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], 16)


def test_docs_table_lists_every_config_field():
    import dataclasses

    from components.data.prepare import DataConfig

    text = (REPO / "docs" / "finetune-training.md").read_text(encoding="utf-8")
    for cls in (TrainConfig, DataConfig):
        missing = [f.name for f in dataclasses.fields(cls) if f"| `{f.name}` |" not in text]
        assert not missing, f"docs/finetune-training.md lacks {cls.__name__} fields: {missing}"
