"""LoRA SFT of a chat model with resumable checkpoints: ``train(cfg, data_dir, out_dir) -> TrainResult``.

Writes::

    out_dir/adapter/      peft adapter (adapter_config.json, adapter_model.safetensors) + tokenizer, manifest.json
    out_dir/merged/       base + adapter merged: safetensors, config, tokenizer with chat template, manifest.json
    out_dir/report.json   loss curve, tokens/s, peak memory, trainable-parameter %, resume info (+ manifest.json)

Flow: validate the config, base model reference and data first (clear errors before any model loads); pick the
backend; tokenize with :func:`components.data.tokenize.encode_chat` (loss on assistant tokens only); resume from the
newest complete checkpoint of this run if the store has one; train with trl's ``SFTTrainer``; every ``save_steps``
the checkpoint is finalized (manifest written last), committed to the store and the store pruned; SIGTERM makes the
trainer save a checkpoint at the end of the current step and then :class:`TrainingPreempted` is raised.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from components.data.events import log_event
from components.data.prepare import TRAIN_FILE, load_split
from components.data.sources import DataError
from components.manifest import atomic_write_text, read_manifest, write_manifest
from components.train.base_model import BaseModelRef, resolve_base_model
from components.train.checkpoints import (
    CheckpointStore,
    CheckpointStoreError,
    HubCheckpointStore,
    LocalCheckpointStore,
    finalize_checkpoint,
    read_checkpoint_meta,
)
from components.train.config import ConfigError, TrainConfig, default_checkpoint_dir, ragtune_home

__all__ = ["train", "TrainResult", "TrainingPreempted", "TrainError", "ADAPTER_DIR", "MERGED_DIR", "REPORT_FILE"]

log = logging.getLogger("ragtune.train")

ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"
REPORT_FILE = "report.json"
ADAPTER_KIND = "lora-adapter"
MERGED_KIND = "hf-model"
REPORT_KIND = "train-report"


class TrainError(RuntimeError):
    """Training cannot start or continue (e.g. a resumed run's config no longer matches)."""


class TrainingPreempted(RuntimeError):
    """SIGTERM arrived; a checkpoint was saved at ``step`` and the process should exit (non-zero) to be retried."""

    def __init__(self, step: int, store: str) -> None:
        super().__init__(f"preempted by SIGTERM: checkpoint for step {step} saved to {store}; restart to resume")
        self.step = step


@dataclass
class TrainResult:
    """What :func:`train` produced."""

    adapter_dir: Path
    merged_dir: Path
    report_path: Path
    global_step: int
    resumed_from_step: int | None
    backend: str
    report: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------- data


def _read_chat_template(value: str | None) -> str | None:
    if not value:
        return None
    path = Path(value).expanduser()
    if "{" not in value and path.suffix in (".jinja", ".j2", ".txt") and path.is_file():
        return path.read_text(encoding="utf-8")
    if "{" not in value:
        raise ConfigError("chat_template", f"{value!r} is neither a Jinja template nor an existing .jinja file")
    return value


class PadCollator:
    """Right-pad ``input_ids`` / ``labels`` (labels with -100) and build the attention mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), longest), -100, dtype=torch.long)
        mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            ids[row, :n] = torch.as_tensor(example["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(example["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class TokenCounter:
    """Count the real (non-padding) tokens that go through the model's forward pass while it trains.

    Counting at the forward pass, not in the collator, leaves out the batches a resumed run skips over.
    """

    def __init__(self, model: Any) -> None:
        self.tokens = 0
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not module.training:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if mask is not None:
            self.tokens += int(mask.sum())
        elif ids is not None:
            self.tokens += int(ids.numel())

    def close(self) -> None:
        self._handle.remove()


def tokenize_conversations(
    rows: list[list[dict[str, str]]], tokenizer: Any, max_length: int, chat_template: str | None
) -> tuple[list[dict[str, list[int]]], int]:
    """Encode every conversation with :func:`encode_chat`; drop those left without an assistant token.

    Returns ``(examples, dropped)``.
    """
    from tqdm.auto import tqdm

    from components.data.tokenize import IGNORE_INDEX, encode_chat

    examples, dropped = [], 0
    for messages in tqdm(rows, desc="tokenizing", unit=" conv", disable=not sys.stderr.isatty()):
        enc = encode_chat(tokenizer, messages, max_length, chat_template)
        if all(label == IGNORE_INDEX for label in enc["labels"]):
            dropped += 1
            continue
        examples.append({"input_ids": enc["input_ids"], "labels": enc["labels"]})
    return examples, dropped


# ------------------------------------------------------------------------------------------------- checkpoints


def make_store(cfg: TrainConfig, ref: BaseModelRef, run_name: str, api: Any = None) -> CheckpointStore:
    """Build the checkpoint store named by ``cfg.checkpoint_store``."""
    if cfg.checkpoint_store == "hub":
        repo_id = cfg.checkpoint_location or f"{cfg.hub_namespace}/{ref.name}-checkpoint"
        if repo_id.count("/") != 1:
            raise ConfigError("checkpoint_location", f"hub repo id must look like owner/name, got {repo_id!r}")
        # Local copies of hub checkpoints live beside the local store, never inside an output artifact.
        staging = default_checkpoint_dir() / "hub" / repo_id.replace("/", "--")
        return HubCheckpointStore(repo_id, run_name, staging, api=api)
    root = Path(cfg.checkpoint_location).expanduser() if cfg.checkpoint_location else default_checkpoint_dir()
    return LocalCheckpointStore(root, run_name)


class _Preemption:
    """SIGTERM flag set by the signal handler and read by the trainer callback."""

    def __init__(self) -> None:
        self.requested = False
        self.saved_step: int | None = None


@contextmanager
def _sigterm_guard(flag: _Preemption) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        flag.requested = True
        log_event(log, "sigterm_received", level=logging.WARNING)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _callbacks(store: CheckpointStore, cfg: TrainConfig, meta: dict[str, Any], flag: _Preemption,
               curve: list[dict[str, Any]]) -> list[Any]:
    from transformers import TrainerCallback

    class StoreCallback(TrainerCallback):
        """Finalize, commit and rotate each checkpoint right after Trainer wrote it."""

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            folder = store.staging_dir / f"checkpoint-{step}"
            finalize_checkpoint(folder, step=step, meta=meta)
            store.commit(step)
            deleted = store.prune(cfg.save_total_limit)
            log_event(log, "checkpoint_saved", step=step, store=store.describe(),
                      pruned=",".join(map(str, deleted)) or "-")
            if flag.requested:
                flag.saved_step = step
            return control

    class PreemptCallback(TrainerCallback):
        """On SIGTERM: save at the end of the current optimizer step, then stop."""

        def on_step_end(self, args, state, control, **kwargs):
            if flag.requested:
                control.should_save = True
                control.should_training_stop = True
            return control

    class CurveCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                curve.append({"step": state.global_step, "loss": float(logs["loss"]),
                              "learning_rate": float(logs.get("learning_rate", 0.0))})
                log_event(log, "train_log", step=state.global_step, max_steps=state.max_steps,
                          loss=float(logs["loss"]))
            return control

    return [StoreCallback(), PreemptCallback(), CurveCallback()]


# ------------------------------------------------------------------------------------------------------ train


def _peak_memory(device: str) -> dict[str, Any]:
    if device == "cuda":
        import torch

        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_allocated"}
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return {"peak_memory_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "peak_memory_kind": "process_max_rss"}


def _sft_config(cfg: TrainConfig, rt: Any, output_dir: Path) -> Any:
    from trl import SFTConfig

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        optim=rt.optim,
        seed=cfg.seed,
        data_seed=cfg.seed,
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # the store rotates, counting only complete checkpoints
        report_to="none",
        bf16=rt.bf16,
        fp16=rt.fp16,
        use_cpu=rt.device == "cpu",
        gradient_checkpointing=rt.gradient_checkpointing and rt.backend == "hf" and not rt.quantized,
        max_length=cfg.max_seq_length,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=not sys.stderr.isatty(),
    )
    if kwargs["gradient_checkpointing"]:
        kwargs["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    return SFTConfig(**kwargs)


def _data_digest(data_dir: Path) -> str:
    try:
        return read_manifest(data_dir)["files"][TRAIN_FILE]["sha256"]
    except Exception as exc:  # missing/odd manifest: load_split reports it properly next
        raise DataError(f"data_dir: {data_dir} is not a prepared dataset ({exc})") from exc


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, *, hub_api: Any = None) -> TrainResult:
    """Fine-tune ``cfg.base_model`` with LoRA on ``data_dir/train.jsonl``; write adapter, merged model and report.

    Args:
        cfg: the training configuration.
        data_dir: a folder written by :func:`components.data.prepare.prepare_dataset`.
        out_dir: where ``adapter/``, ``merged/`` and ``report.json`` go.
        hub_api: a ``huggingface_hub.HfApi``-like object for the hub store (default: built from ``HF_TOKEN``).

    Raises:
        DataError / BaseModelError / ConfigError / BackendError: bad input, before any model is loaded.
        TrainError: the run's stored checkpoints were made with a different training config.
        TrainingPreempted: SIGTERM; a checkpoint was saved first.
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    started = time.time()
    # 1. Everything that can be checked cheaply, before loading a model.
    ref = resolve_base_model(cfg.base_model, cfg.gguf_file)
    digest = _data_digest(data_dir)
    rows = load_split(data_dir, TRAIN_FILE)
    if not rows:
        raise DataError(f"data_dir: {data_dir / TRAIN_FILE} holds no conversation")
    chat_template = _read_chat_template(cfg.chat_template)
    fingerprint = cfg.fingerprint(digest)
    run_name = cfg.run_name or f"{ref.name}-{fingerprint[:12]}"
    out.mkdir(parents=True, exist_ok=True)
    store = make_store(cfg, ref, run_name, api=hub_api)
    store.prepare()

    from components.train.backends import choose_runtime, load_for_training  # imports unsloth first if chosen

    rt = choose_runtime(cfg)
    resume = store.latest_complete() if cfg.resume else None
    if resume is not None:
        stored = read_checkpoint_meta(resume[1])
        if stored.get("fingerprint") != fingerprint:
            differing = cfg.training_fields_differing(stored.get("config", {}))
            what = ", ".join(differing) if differing else "the training data"
            raise TrainError(f"run_name: checkpoints of run {run_name!r} were made with a different {what}; "
                             "use another run_name or resume=false")
    log_event(log, "train_start", run=run_name, backend=rt.backend, device=rt.device, store=store.describe(),
              resume_step=resume[0] if resume else "-", examples=len(rows))

    # 2. Model, data, trainer.
    import torch
    from datasets import Dataset
    from trl import SFTTrainer

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    model, tokenizer = load_for_training(cfg, ref, rt, ragtune_home() / "cache")
    if chat_template:
        tokenizer.chat_template = chat_template
    examples, dropped = tokenize_conversations(rows, tokenizer, cfg.max_seq_length, chat_template)
    if not examples:
        raise DataError("data_dir: no conversation keeps an assistant token within max_seq_length")
    dataset = Dataset.from_list(examples)
    collator = PadCollator(tokenizer.pad_token_id)
    curve: list[dict[str, Any]] = []
    flag = _Preemption()
    meta = {"run_name": run_name, "fingerprint": fingerprint, "config": cfg.to_dict(), "base_model": ref.path,
            "gguf_file": ref.gguf_file}
    trainer = SFTTrainer(
        model=model,
        args=_sft_config(cfg, rt, store.staging_dir),
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator,
        callbacks=_callbacks(store, cfg, meta, flag, curve),
    )
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if rt.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    counter = TokenCounter(model)
    t0 = time.perf_counter()
    try:
        with _sigterm_guard(flag):
            trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    finally:
        counter.close()
    train_seconds = time.perf_counter() - t0
    if flag.requested:
        step = flag.saved_step if flag.saved_step is not None else trainer.state.global_step
        log_event(log, "train_preempted", level=logging.WARNING, step=step, store=store.describe())
        raise TrainingPreempted(step, store.describe())

    # 3. Outputs.
    adapter_dir, merged_dir = out / ADAPTER_DIR, out / MERGED_DIR
    _save_adapter(model, tokenizer, adapter_dir, cfg, ref, run_name)
    _save_merged(model, tokenizer, merged_dir, cfg, ref, rt, adapter_dir)
    report = {
        "run_name": run_name,
        "fingerprint": fingerprint,
        "backend": rt.backend,
        "device": rt.device,
        "quantized_base": rt.quantized,
        "optimizer": rt.optim,
        "precision": rt.compute_dtype_name,
        "store": store.describe(),
        "global_step": int(trainer.state.global_step),
        "resumed_from_step": resume[0] if resume else None,
        "loss_curve": curve,
        "final_loss": curve[-1]["loss"] if curve else None,
        "train_tokens": counter.tokens,
        "train_seconds": round(train_seconds, 3),
        "tokens_per_second": round(counter.tokens / train_seconds, 3) if train_seconds > 0 else 0.0,
        "trainable_params": int(trainable),
        "total_params": int(total),
        "trainable_percent": round(100.0 * trainable / total, 4) if total else 0.0,
        "examples": len(examples),
        "examples_dropped_no_assistant_token": dropped,
        "wall_seconds": round(time.time() - started, 3),
        "config": cfg.to_dict(),
        **_peak_memory(rt.device),
    }
    report_path = out / REPORT_FILE
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    write_manifest(out, [REPORT_FILE], kind=REPORT_KIND, meta={"run_name": run_name})
    log_event(log, "train_done", run=run_name, steps=report["global_step"], tokens_per_s=report["tokens_per_second"],
              final_loss=report["final_loss"] if report["final_loss"] is not None else "-")
    return TrainResult(adapter_dir, merged_dir, report_path, report["global_step"], report["resumed_from_step"],
                       rt.backend, report)


def _save_adapter(model: Any, tokenizer: Any, adapter_dir: Path, cfg: TrainConfig, ref: BaseModelRef,
                  run_name: str) -> None:
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    model.save_pretrained(str(adapter_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(adapter_dir))
    # Name the base the way the user gave it (the unsloth / QLoRA paths load from a dequantized copy).
    config_path = adapter_dir / "adapter_config.json"
    adapter_cfg = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_cfg["base_model_name_or_path"] = cfg.base_model or str(Path(ref.path) / (ref.gguf_file or ""))
    atomic_write_text(config_path, json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n")
    write_manifest(adapter_dir, kind=ADAPTER_KIND,
                   meta={"run_name": run_name, "base_model": ref.path, "gguf_file": ref.gguf_file,
                         "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "target_modules": cfg.target_modules})


def _merged_dtype(cfg: TrainConfig, rt: Any) -> Any:
    import torch

    if cfg.merged_dtype != "auto":
        return getattr(torch, cfg.merged_dtype)
    if rt.device == "cpu":
        return torch.float32
    return torch.bfloat16 if rt.bf16 else torch.float16


def _save_merged(model: Any, tokenizer: Any, merged_dir: Path, cfg: TrainConfig, ref: BaseModelRef, rt: Any,
                 adapter_dir: Path) -> None:
    dtype = _merged_dtype(cfg, rt)
    if rt.quantized or rt.backend == "unsloth":
        # A 4-bit base cannot be merged losslessly: reload the base in 16-bit and apply the saved adapter to it.
        from peft import PeftModel

        from components.train.base_model import load_base_model

        base, _ = load_base_model(cfg.base_model, gguf_file=cfg.gguf_file, dtype=dtype)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    else:
        merged = model.merge_and_unload()
        merged = merged.to(dtype)
    merged.config.use_cache = True
    if merged_dir.exists():
        shutil.rmtree(merged_dir)
    merged.save_pretrained(str(merged_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(merged_dir))
    write_manifest(merged_dir, kind=MERGED_KIND,
                   meta={"base_model": ref.path, "gguf_file": ref.gguf_file, "architecture":
                         (merged.config.architectures or [""])[0], "dtype": str(dtype).replace("torch.", "")})


def result_to_dict(result: TrainResult) -> dict[str, Any]:
    """JSON-friendly form of a :class:`TrainResult` (paths as strings)."""
    out = dataclasses.asdict(result)
    for key in ("adapter_dir", "merged_dir", "report_path"):
        out[key] = str(out[key])
    return out
