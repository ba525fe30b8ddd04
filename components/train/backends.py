"""Training backends: pick one, and load the base model with LoRA adapters attached.

* ``unsloth`` (CUDA only): ``FastLanguageModel`` in 4-bit with unsloth's gradient checkpointing. unsloth patches
  transformers / trl / peft when imported, so it is imported here before any of them.
* ``hf``: transformers + peft. On CUDA, QLoRA (bitsandbytes NF4 with double quantization, compute in bf16/fp16,
  ``prepare_model_for_kbit_training``); on CPU, the full-precision model.

Both return a peft ``PeftModel`` with the same LoRA settings, so both save the same adapter format.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.events import log_event
from components.train.base_model import BaseModelRef, load_base_model, materialize_hf_folder
from components.train.config import TrainConfig

log = logging.getLogger("ragtune.train")


class BackendError(RuntimeError):
    """The requested backend cannot run here (e.g. unsloth without a CUDA GPU)."""


@dataclass
class Runtime:
    """Where and how training runs, decided once from the config and the machine."""

    backend: str  # "unsloth" | "hf"
    device: str  # "cuda" | "cpu"
    quantized: bool  # base weights in 4-bit
    bf16: bool
    fp16: bool
    optim: str
    gradient_checkpointing: bool

    @property
    def compute_dtype_name(self) -> str:
        return "bfloat16" if self.bf16 else "float16" if self.fp16 else "float32"


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def unsloth_installed() -> bool:
    """unsloth is importable (checked without importing: the import itself fails on machines without a GPU)."""
    return importlib.util.find_spec("unsloth") is not None


def choose_runtime(cfg: TrainConfig) -> Runtime:
    """Resolve ``auto`` settings (backend, optimizer, precision, checkpointing) for this machine."""
    cuda = cuda_available()
    backend = cfg.backend
    if backend == "auto":
        backend = "unsloth" if cuda and unsloth_installed() else "hf"
    if backend == "unsloth":
        if not cuda:
            raise BackendError("backend: 'unsloth' needs a CUDA GPU; use backend=hf (or auto) on CPU")
        if not unsloth_installed():
            raise BackendError("backend: 'unsloth' is not installed in this environment; use backend=hf or auto")
        import unsloth  # noqa: F401  -- must precede transformers/trl/peft so its patches apply

    bf16 = fp16 = False
    if cuda:
        import torch

        supported = torch.cuda.is_bf16_supported()
        if cfg.mixed_precision == "bf16" and not supported:
            raise BackendError("mixed_precision: this GPU does not support bf16; use fp16 or auto")
        bf16 = cfg.mixed_precision == "bf16" or (cfg.mixed_precision == "auto" and supported)
        fp16 = cfg.mixed_precision == "fp16" or (cfg.mixed_precision == "auto" and not supported)
    elif cfg.mixed_precision in ("bf16", "fp16"):
        raise BackendError(f"mixed_precision: {cfg.mixed_precision} needs a GPU; use auto or no on CPU")

    optim = cfg.optim if cfg.optim != "auto" else ("adamw_8bit" if cuda else "adamw_torch")
    if not cuda and "8bit" in optim:
        raise BackendError(f"optim: {optim} needs bitsandbytes on a GPU; use adamw_torch on CPU")
    gradient_checkpointing = cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else cuda
    quantized = cuda and cfg.load_in_4bit
    return Runtime(backend, "cuda" if cuda else "cpu", quantized, bf16, fp16, optim, gradient_checkpointing)


def lora_config(cfg: TrainConfig) -> Any:
    """The peft ``LoraConfig`` for ``cfg`` (shared by both backends)."""
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_for_training(cfg: TrainConfig, ref: BaseModelRef, rt: Runtime, work_dir: Path) -> tuple[Any, Any]:
    """Load the base model for ``rt`` and attach fresh LoRA adapters (seeded); return ``(peft_model, tokenizer)``."""
    from transformers import set_seed

    set_seed(cfg.seed)
    if rt.backend == "unsloth":
        return _load_unsloth(cfg, ref, rt, work_dir)
    return _load_hf(cfg, ref, rt, work_dir)


def _dequantized_dir(work_dir: Path, ref: BaseModelRef) -> Path:
    """Cache folder for the dequantized copy of a GGUF base, one per GGUF file (by path, size and mtime)."""
    import hashlib

    gguf = Path(ref.path) / (ref.gguf_file or "")
    stat = gguf.stat() if gguf.is_file() else None
    key = f"{gguf}|{stat.st_size if stat else ''}|{stat.st_mtime_ns if stat else ''}"
    return work_dir / f"{ref.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _missing_targets(model: Any, targets: list[str]) -> list[str]:
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in names]


def _load_hf(cfg: TrainConfig, ref: BaseModelRef, rt: Runtime, work_dir: Path) -> tuple[Any, Any]:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    source = ref.path if not ref.gguf_file else str(Path(ref.path) / ref.gguf_file)
    if rt.device == "cuda":
        from transformers import BitsAndBytesConfig

        dtype = torch.bfloat16 if rt.bf16 else torch.float16
        quant = None
        if rt.quantized:
            quant = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype,
            )
            # bitsandbytes quantizes from HF weights, so a GGUF base is dequantized to a folder first.
            source = materialize_hf_folder(cfg.base_model, _dequantized_dir(work_dir, ref), gguf_file=cfg.gguf_file)
            model, tokenizer = load_base_model(source, dtype=dtype, quantization_config=quant, device_map={"": 0})
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=rt.gradient_checkpointing)
        else:
            model, tokenizer = load_base_model(cfg.base_model, gguf_file=cfg.gguf_file, dtype=dtype,
                                               device_map={"": 0})
    else:
        model, tokenizer = load_base_model(cfg.base_model, gguf_file=cfg.gguf_file, dtype=torch.float32)
    missing = _missing_targets(model, cfg.target_modules)
    if missing:
        raise BackendError(f"target_modules: {', '.join(missing)} not found in {ref.name}")
    if rt.gradient_checkpointing and not rt.quantized:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    peft_model = get_peft_model(model, lora_config(cfg))
    log_event(log, "model_ready", backend="hf", device=rt.device, quantized=rt.quantized, source=source)
    return peft_model, tokenizer


def _load_unsloth(cfg: TrainConfig, ref: BaseModelRef, rt: Runtime, work_dir: Path) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel

    source = materialize_hf_folder(cfg.base_model, _dequantized_dir(work_dir, ref), gguf_file=cfg.gguf_file)
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source,
        max_seq_length=cfg.max_seq_length,
        dtype=None,  # unsloth picks bf16 where supported, else fp16
        load_in_4bit=cfg.load_in_4bit,
    )
    missing = _missing_targets(model, cfg.target_modules)
    if missing:
        raise BackendError(f"target_modules: {', '.join(missing)} not found in {ref.name}")
    model = FastLanguageModel.get_peft_model(
        model,
        r=cfg.lora_r,
        target_modules=list(cfg.target_modules),
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        bias="none",
        use_gradient_checkpointing="unsloth" if rt.gradient_checkpointing else False,
        random_state=cfg.seed,
        use_rslora=False,
        loftq_config=None,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    log_event(log, "model_ready", backend="unsloth", device=rt.device, quantized=cfg.load_in_4bit, source=source)
    return model, tokenizer
