"""The evaluation step: held-out perplexity of base, fine-tuned and every GGUF quant; report; promotion gate."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from components.evaluate.config import EvalConfig
from components.evaluate.perplexity import Encoded, Scores, encode_examples, gguf_scores, hf_scores
from components.manifest import atomic_write_text, verify_manifest, write_manifest

log = logging.getLogger("ragtune.evaluate")

REPORT_KIND = "eval-report"


class EvaluationError(RuntimeError):
    """Evaluation cannot run: missing held-out data, models or export."""


@dataclass
class ModelScore:
    """Perplexity of one model on the full held-out set and over the bootstrap resamples."""

    name: str
    kind: str  # "hf" or "gguf"
    perplexity: float
    mean: float
    std: float
    min: float
    max: float
    seconds: float


@dataclass
class Gate:
    """The promotion decision: fine-tuned perplexity <= base x (1 + margin)."""

    passed: bool
    margin: float
    threshold: float | None
    reason: str


@dataclass
class EvalResult:
    """Everything the report holds (``report.json`` is ``asdict`` of this)."""

    n_examples: int
    n_tokens: int
    repeats: int
    seed: int
    models: dict[str, ModelScore] = field(default_factory=dict)
    relative_change: dict[str, float] = field(default_factory=dict)
    fidelity: dict[str, float] = field(default_factory=dict)
    gate: Gate | None = None

    def metrics(self) -> dict[str, float]:
        """Flat numbers for KFP metrics and the model catalog."""
        out = {f"ppl_{name.replace(':', '_')}": round(m.perplexity, 4) for name, m in self.models.items()}
        for key, value in self.relative_change.items():
            out[f"ppl_change_{key}"] = round(value, 6)
        for quant, value in self.fidelity.items():
            out[f"ppl_gap_{quant}"] = round(value, 6)
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = self.metrics()
        return data


def read_heldout(data_dir: str | os.PathLike[str], limit: int) -> list[list[dict[str, str]]]:
    """The first ``limit`` conversations of ``heldout.jsonl`` (``{"messages": [...]}`` per line)."""
    path = Path(data_dir) / "heldout.jsonl"
    if not path.is_file():
        raise EvaluationError(f"held-out set {path} does not exist")
    conversations = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                conversations.append(json.loads(line)["messages"])
            if len(conversations) >= limit:
                break
    if not conversations:
        raise EvaluationError(f"held-out set {path} is empty")
    return conversations


def bootstrap_indices(n: int, repeats: int, seed: int) -> list[np.ndarray]:
    """``repeats`` seeded resamples (with replacement) of ``range(n)``; one plain pass when repeats is 1."""
    if repeats == 1:
        return [np.arange(n)]
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=n) for _ in range(repeats)]


def summarize(name: str, kind: str, scores: Scores, resamples: list[np.ndarray], seconds: float) -> ModelScore:
    values = np.array([scores.perplexity(idx) for idx in resamples])
    return ModelScore(name, kind, scores.perplexity(), float(values.mean()), float(values.std(ddof=0)),
                      float(values.min()), float(values.max()), round(seconds, 3))


def load_hf(model: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Load an HF model + tokenizer in float32: a merged folder, or a base model (Hub id, folder or ``.gguf``)."""
    import torch

    from components.train.base_model import load_base_model

    return load_base_model(str(model), dtype=torch.float32)


def decide(result: EvalResult, margin: float) -> Gate:
    """Pass when the fine-tuned model's perplexity is at most the base's times (1 + margin)."""
    base, tuned = result.models.get("base"), result.models.get("finetuned")
    if base is None or tuned is None:
        return Gate(True, margin, None, "base model not evaluated: nothing to compare against")
    threshold = base.perplexity * (1.0 + margin)
    passed = tuned.perplexity <= threshold
    verdict = "<=" if passed else ">"
    return Gate(passed, margin, threshold,
                f"fine-tuned {tuned.perplexity:.4f} {verdict} base {base.perplexity:.4f} x (1 + {margin:g})")


def evaluate(cfg: EvalConfig, data_dir: str | os.PathLike[str], finetuned_dir: str | os.PathLike[str],
             export_dir: str | os.PathLike[str] | None, out_dir: str | os.PathLike[str], *,
             base_model: str | None = None) -> EvalResult:
    """Score base, fine-tuned and GGUF models on the held-out set; write report.json, report.md and a manifest.

    Args:
        cfg: evaluation settings (examples, length, repeats, seed, gate margin).
        data_dir: the data step's output (``heldout.jsonl``).
        finetuned_dir: the merged fine-tuned HF model (a training output with ``merged/`` inside also works).
        export_dir: the export step's output (its manifest is verified); None skips the GGUF scores.
        out_dir: where the report goes.
        base_model: the base model to compare against; default the one the export manifest names.
    """
    from components.export.gguf_export import load_export, resolve_hf_model

    conversations = read_heldout(data_dir, cfg.max_examples)
    export = load_export(export_dir) if export_dir is not None else None
    gguf_paths: dict[str, Path] = {}
    if export is not None:  # checked before any model loads
        for quant in cfg.quant_types or [f.quant for f in export.files]:
            try:
                gguf_paths[quant] = export.gguf(quant)
            except KeyError as exc:
                raise EvaluationError(f"evaluate.quant_types: {exc.args[0]}") from exc
    merged_dir, found_base = resolve_hf_model(finetuned_dir, Path(out_dir) / ".work")
    base_model = base_model or (export.base_model if export else None) or found_base

    t0 = time.perf_counter()
    tuned_model, tokenizer = load_hf(merged_dir)
    examples: list[Encoded] = encode_examples(tokenizer, conversations, cfg.max_length)
    if not examples:
        raise EvaluationError("no held-out conversation has assistant tokens within max_length")
    resamples = bootstrap_indices(len(examples), cfg.repeats, cfg.seed)
    n_tokens = sum(ex.n_scored for ex in examples)
    result = EvalResult(len(examples), n_tokens, cfg.repeats, cfg.seed)
    _event("eval_start", examples=len(examples), tokens=n_tokens, repeats=cfg.repeats)

    all_scores: dict[str, Scores] = {}
    all_scores["finetuned"] = hf_scores(tuned_model, examples, desc="finetuned")
    result.models["finetuned"] = summarize("finetuned", "hf", all_scores["finetuned"], resamples,
                                           time.perf_counter() - t0)
    del tuned_model
    if cfg.eval_base:
        if not base_model:
            raise EvaluationError("eval_base is true but no base model is known (set it or disable eval_base)")
        t0 = time.perf_counter()
        base, _ = load_hf(base_model)
        all_scores["base"] = hf_scores(base, examples, desc="base")
        result.models["base"] = summarize("base", "hf", all_scores["base"], resamples, time.perf_counter() - t0)
        del base
    for quant, path in gguf_paths.items():
        t0 = time.perf_counter()
        name = f"gguf:{quant}"
        all_scores[name] = gguf_scores(path, examples, n_threads=cfg.n_threads, desc=quant)
        result.models[name] = summarize(name, "gguf", all_scores[name], resamples, time.perf_counter() - t0)
        result.fidelity[quant] = result.models[name].perplexity / result.models["finetuned"].perplexity - 1.0

    if "base" in all_scores:
        ratios = np.array([all_scores["finetuned"].perplexity(i) / all_scores["base"].perplexity(i)
                           for i in resamples]) - 1.0
        result.relative_change = {
            "point": result.models["finetuned"].perplexity / result.models["base"].perplexity - 1.0,
            "mean": float(ratios.mean()),
            "std": float(ratios.std(ddof=0)),
        }
    shutil.rmtree(Path(out_dir) / ".work", ignore_errors=True)
    result.gate = decide(result, cfg.margin)
    _event("gate", passed=result.gate.passed, reason=json.dumps(result.gate.reason))
    write_report(result, out_dir)
    return result


def write_report(result: EvalResult, out_dir: str | os.PathLike[str]) -> None:
    """Write ``report.json``, ``report.md`` and the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "report.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / "report.md", markdown_report(result))
    write_manifest(out_dir, ["report.json", "report.md"], kind=REPORT_KIND,
                   meta={"gate_passed": result.gate.passed if result.gate else None})


def markdown_report(result: EvalResult) -> str:
    """The report as a Markdown table (one row per model)."""
    tuned = result.models.get("finetuned")
    spread = f"mean ± std over {result.repeats} bootstrap resamples" if result.repeats > 1 else "single pass"
    lines = [
        "# Held-out perplexity (assistant tokens only)",
        "",
        f"{result.n_examples} conversations, {result.n_tokens} scored tokens, seed {result.seed}.",
        "",
        f"| model | perplexity | {spread} | vs fine-tuned HF | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in result.models.items():
        rel = f"{(m.perplexity / tuned.perplexity - 1) * 100:+.2f}%" if tuned else "n/a"
        lines.append(f"| {name} | {m.perplexity:.4f} | {m.mean:.4f} ± {m.std:.4f} | {rel} | {m.seconds:.1f} |")
    if result.relative_change:
        rc = result.relative_change
        lines += ["", f"Fine-tuned vs base: {rc['point'] * 100:+.2f}% "
                      f"(resamples: {rc['mean'] * 100:+.2f}% ± {rc['std'] * 100:.2f}%)."]
    if result.gate:
        lines += ["", f"Gate: **{'PASS' if result.gate.passed else 'FAIL'}** — {result.gate.reason}."]
    return "\n".join(lines) + "\n"


def load_report(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify and read an evaluation report folder (what publish reads)."""
    verify_manifest(out_dir, kind=REPORT_KIND)
    return json.loads((Path(out_dir) / "report.json").read_text(encoding="utf-8"))


def _event(event: str, **fields: Any) -> None:
    log.info("event=%s %s", event, " ".join(f"{k}={v}" for k, v in fields.items()))
