"""Merged HF model -> GGUF (convert-hf-to-gguf) -> llama.cpp quantizations, with a sha256 manifest.

The input is a training output folder (``merged/`` and/or ``adapter/`` inside, as the train step writes it) or a
plain Hugging Face model folder. When only an adapter is present it is merged into its base model first.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from components.export.config import QUANT_FTYPES, ExportConfig
from components.manifest import MANIFEST_NAME, verify_manifest, write_manifest

log = logging.getLogger("ragtune.export")

EXPORT_KIND = "gguf-export"


class ExportError(RuntimeError):
    """The export cannot proceed: missing input, failed conversion or quantization."""


@dataclass
class QuantFile:
    """One GGUF file of the export."""

    quant: str
    file: str
    size: int
    seconds: float


@dataclass
class ExportResult:
    """What :func:`export_model` wrote into its output folder."""

    out_dir: str
    model_id: str
    base_model: str | None
    files: list[QuantFile] = field(default_factory=list)
    chat_template: str | None = None
    safetensors_4bit: str | None = None
    convert_seconds: float = 0.0

    def gguf(self, quant: str) -> Path:
        """Path of the GGUF file for ``quant`` (e.g. ``q8_0`` or the unquantized ``f16``)."""
        for f in self.files:
            if f.quant == quant:
                return Path(self.out_dir) / f.file
        raise KeyError(f"export has no {quant!r} file; it has {[f.quant for f in self.files]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _event(event: str, **fields: Any) -> None:
    log.info("event=%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))


# -- input resolution ------------------------------------------------------------------------------------------


def resolve_hf_model(model_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Return ``(hf_folder, base_model)`` for a training output folder or a plain HF model folder.

    Every manifest found on the way (training output, ``merged/``, ``adapter/``) is verified first. When the
    folder holds an adapter but no merged model, the adapter is merged into its base (written to
    ``work_dir/merged``). ``base_model`` is the model fine-tuned from (a ``.gguf`` path for a GGUF base), if known.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ExportError(f"model folder {model_dir} does not exist")
    if (model_dir / MANIFEST_NAME).is_file():
        verify_manifest(model_dir)
    for sub in ("merged", "."):
        candidate = (model_dir / sub).resolve()
        if (candidate / "config.json").is_file():
            base = _base_from_manifest(candidate)
            return candidate, base
    adapter = model_dir / "adapter" if (model_dir / "adapter").is_dir() else model_dir
    if (adapter / "adapter_config.json").is_file():
        base_model = _base_from_manifest(adapter) or _adapter_base(adapter)
        return merge_adapter(adapter, Path(work_dir) / "merged", base_model=base_model), base_model
    raise ExportError(f"{model_dir} holds neither a merged HF model (config.json) nor a peft adapter")


def _base_from_manifest(folder: Path) -> str | None:
    """The base model a train-step folder records (verified manifest), as a loadable path or Hub id."""
    if not (folder / MANIFEST_NAME).is_file():
        return None
    meta = verify_manifest(folder).get("meta") or {}
    base = meta.get("base_model")
    if base and meta.get("gguf_file"):
        base = str(Path(base) / meta["gguf_file"])
    return base or None


def _adapter_base(adapter_dir: Path) -> str | None:
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    return cfg.get("base_model_name_or_path")


def merge_adapter(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  base_model: str | None = None) -> Path:
    """Merge a peft LoRA adapter into ``base_model`` (default: the adapter's own base) and save it to ``out_dir``."""
    import torch
    from peft import PeftModel

    from components.train.base_model import load_base_model

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = base_model or _adapter_base(adapter_dir)  # None/empty: the packaged default base model
    _event("merge_adapter", adapter=adapter_dir, base=base or "default")
    model, tokenizer = load_base_model(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# -- conversion and quantization -------------------------------------------------------------------------------


def convert_to_gguf(hf_dir: str | os.PathLike[str], out_file: str | os.PathLike[str], *, outtype: str = "f16",
                    model_name: str | None = None, timeout_s: int = 1800) -> Path:
    """Run ``convert-hf-to-gguf --outtype OUTTYPE --outfile OUT HF_DIR`` offline; raise ExportError on failure."""
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.part")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", "--outtype", outtype, "--outfile", str(tmp), str(hf_dir)]
    if model_name:
        cmd[-1:-1] = ["--model-name", model_name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"convert-hf-to-gguf ran longer than {timeout_s} s on {hf_dir}") from exc
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"convert-hf-to-gguf failed on {hf_dir} (exit {proc.returncode}):\n{tail}")
    os.replace(tmp, out_file)
    return out_file


def quantize_gguf(in_file: str | os.PathLike[str], out_file: str | os.PathLike[str], quant: str, *,
                  nthread: int = 0) -> Path:
    """Quantize a GGUF with llama.cpp's quantizer (``llama_model_quantize`` through llama-cpp-python)."""
    import llama_cpp

    quant = quant.lower()
    if quant not in QUANT_FTYPES:
        raise ExportError(f"unknown quantization {quant!r}; choose from {', '.join(QUANT_FTYPES)}")
    out_file = Path(out_file)
    tmp = out_file.with_name(f".{out_file.name}.part")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[quant])
    params.nthread = nthread or (os.cpu_count() or 1)
    rc = llama_cpp.llama_model_quantize(str(in_file).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise ExportError(f"llama.cpp quantization to {quant} failed (return code {rc}) for {in_file}")
    os.replace(tmp, out_file)
    return out_file


def read_chat_template(hf_dir: str | os.PathLike[str]) -> str | None:
    """The chat template the tokenizer in ``hf_dir`` carries (also what convert-hf-to-gguf embeds)."""
    hf_dir = Path(hf_dir)
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    cfg = hf_dir / "tokenizer_config.json"
    if cfg.is_file():
        template = json.loads(cfg.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            return template
    return None


def write_4bit_safetensors(hf_dir: Path, out_dir: Path) -> Path:
    """Load the merged model in bitsandbytes NF4 on the GPU and save it (needs CUDA and bitsandbytes)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, quantization_config=quant, device_map="auto")
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(hf_dir).save_pretrained(out_dir)
    return out_dir


def _gpu_with_bnb() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import bitsandbytes  # noqa: F401  (only needed to know the 4-bit path can run)
    except ImportError:
        return False
    return True


# -- the step --------------------------------------------------------------------------------------------------


def export_model(cfg: ExportConfig, model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 base_model: str | None = None, hub_api: Any = None) -> ExportResult:
    """Convert ``model_dir`` to GGUF, write every quantization in ``cfg`` and a manifest into ``out_dir``.

    Args:
        cfg: the export settings.
        model_dir: a training output folder (``merged/`` or ``adapter/`` inside) or an HF model folder.
        out_dir: where the GGUF files and ``manifest.json`` go.
        base_model: the model fine-tuned from, recorded in the manifest (default: read from the training output).
        hub_api: a ``huggingface_hub.HfApi``-like client for ``push_to_hub`` (default: a real ``HfApi``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / ".work"
    hf_dir, found_base = resolve_hf_model(model_dir, work)
    base_model = base_model or found_base
    result = ExportResult(out_dir=str(out_dir), model_id=cfg.model_id, base_model=base_model)
    result.chat_template = read_chat_template(hf_dir)

    full_name = f"{cfg.model_id}.{cfg.outtype}.gguf"
    started = time.perf_counter()
    _event("convert_start", hf_dir=hf_dir, outtype=cfg.outtype)
    convert_to_gguf(hf_dir, out_dir / full_name, outtype=cfg.outtype, model_name=cfg.model_id,
                    timeout_s=cfg.convert_timeout_s)
    result.convert_seconds = round(time.perf_counter() - started, 3)
    full_file = QuantFile(cfg.outtype, full_name, (out_dir / full_name).stat().st_size, result.convert_seconds)
    _event("convert_done", file=full_name, size=full_file.size, seconds=result.convert_seconds)

    for quant in tqdm(cfg.quant_types, desc="quantize", unit="quant"):
        name = f"{cfg.model_id}.{quant}.gguf"
        t0 = time.perf_counter()
        quantize_gguf(out_dir / full_name, out_dir / name, quant, nthread=cfg.nthread)
        q = QuantFile(quant, name, (out_dir / name).stat().st_size, round(time.perf_counter() - t0, 3))
        result.files.append(q)
        _event("quantize_done", quant=quant, file=name, size=q.size, seconds=q.seconds)
    if cfg.keep_unquantized:
        result.files.append(full_file)
    else:
        (out_dir / full_name).unlink()

    if cfg.safetensors_4bit == "auto" and _gpu_with_bnb():
        write_4bit_safetensors(hf_dir, out_dir / "safetensors-4bit")
        result.safetensors_4bit = "safetensors-4bit"
    shutil.rmtree(work, ignore_errors=True)

    write_export_manifest(out_dir, result, eval_results={})
    if cfg.push_to_hub:
        from components.export.hub import push_folder

        push_folder(out_dir, cfg.hub_repo, private=cfg.hub_private, api=hub_api)  # type: ignore[arg-type]
    return result


def write_export_manifest(out_dir: str | os.PathLike[str], result: ExportResult, *,
                          eval_results: dict[str, Any]) -> dict[str, Any]:
    """(Re)write the export manifest: model id, base model, quant types, sizes, sha256s, chat template, eval."""
    meta = {
        "model_id": result.model_id,
        "base_model": result.base_model,
        "quant_types": [f.quant for f in result.files],
        "gguf": {f.quant: {"file": f.file, "size": f.size, "seconds": f.seconds} for f in result.files},
        "chat_template": result.chat_template,
        "convert_seconds": result.convert_seconds,
        "safetensors_4bit": result.safetensors_4bit,
        "eval": eval_results,
    }
    return write_manifest(out_dir, kind=EXPORT_KIND, meta=meta)


def load_export(out_dir: str | os.PathLike[str]) -> ExportResult:
    """Verify an export folder's manifest and return its description (what evaluate and publish read)."""
    manifest = verify_manifest(out_dir, kind=EXPORT_KIND)
    meta = manifest["meta"]
    files = [QuantFile(q, v["file"], v["size"], v.get("seconds", 0.0)) for q, v in meta["gguf"].items()]
    return ExportResult(out_dir=str(out_dir), model_id=meta["model_id"], base_model=meta.get("base_model"),
                        files=files, chat_template=meta.get("chat_template"),
                        safetensors_4bit=meta.get("safetensors_4bit"),
                        convert_seconds=meta.get("convert_seconds", 0.0))


__all__ = ["ExportError", "ExportResult", "QuantFile", "convert_to_gguf", "export_model", "load_export",
           "merge_adapter", "quantize_gguf", "resolve_hf_model", "write_export_manifest"]
