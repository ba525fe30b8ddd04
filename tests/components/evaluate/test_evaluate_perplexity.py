"""Held-out perplexity with real models: transformers for HF folders, llama.cpp logits for GGUF files.

The "fine-tuned" model here is the packaged base SmolLM2 saved as an HF folder, so base and fine-tuned must score
the same (two load paths, one set of weights) and the gate's margin alone decides the branch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from components.evaluate.config import EvalConfig, EvalConfigError
from components.evaluate.evaluate import EvaluationError, bootstrap_indices, decide, evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import torch

    from components.data.prepare import DataConfig, prepare_dataset
    from components.export.config import ExportConfig
    from components.export.gguf_export import export_model
    from components.train.base_model import default_base_model, load_base_model

    root = tmp_path_factory.mktemp("eval")
    prepare_dataset(DataConfig(max_examples=20, heldout_size=6, seed=7), root / "data")
    model, tokenizer = load_base_model(default_base_model(), dtype=torch.float32)
    model.save_pretrained(root / "hf", safe_serialization=True)
    tokenizer.save_pretrained(root / "hf")
    export_model(ExportConfig(model_id="base", quant_types=["q8_0"]), root / "hf", root / "gguf",
                 base_model=default_base_model())
    cfg = EvalConfig(max_examples=6, max_length=256, repeats=10, seed=3, margin=0.0)
    result = evaluate(cfg, root / "data", root / "hf", root / "gguf", root / "report")
    return root, result


def test_report_scores_base_finetuned_and_every_quant(setup):
    from components.manifest import verify_manifest

    root, result = setup
    assert set(result.models) == {"finetuned", "base", "gguf:q8_0", "gguf:f16"}
    # conversations with no assistant token within max_length are dropped
    assert 1 <= result.n_examples <= 6 and result.n_tokens > 100
    tuned, base = result.models["finetuned"], result.models["base"]
    # Same weights through two load paths (HF folder vs the GGUF the folder came from): same perplexity.
    assert tuned.perplexity == pytest.approx(base.perplexity, rel=1e-3)
    assert abs(result.relative_change["point"]) < 1e-3
    for name, m in result.models.items():
        assert 1.0 < m.perplexity < 1000.0, name
        assert m.min <= m.mean <= m.max and m.std > 0, name
    assert abs(result.fidelity["q8_0"]) < 0.02
    assert abs(result.fidelity["f16"]) <= abs(result.fidelity["q8_0"]) + 1e-3

    verify_manifest(root / "report", kind="eval-report")
    saved = json.loads((root / "report" / "report.json").read_text())
    assert saved["metrics"]["ppl_gguf_q8_0"] == pytest.approx(result.models["gguf:q8_0"].perplexity, abs=1e-3)
    assert saved["gate"]["passed"] is True and saved["repeats"] == 10
    md = (root / "report" / "report.md").read_text()
    assert "| gguf:q8_0 |" in md and "Gate: **PASS**" in md and "10 bootstrap resamples" in md


def test_gate_takes_both_branches_by_margin(setup):
    _, result = setup
    assert decide(result, 0.01).passed is True
    failing = decide(result, -0.5)
    assert failing.passed is False and "> base" in failing.reason
    assert failing.threshold == pytest.approx(result.models["base"].perplexity * 0.5)


def test_resampling_is_seeded():
    a, b, c = bootstrap_indices(30, 5, 1), bootstrap_indices(30, 5, 1), bootstrap_indices(30, 5, 2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert np.array_equal(bootstrap_indices(4, 1, 9)[0], np.arange(4))


def test_missing_inputs_are_clear_errors(setup, tmp_path):
    root, _ = setup
    with pytest.raises(EvaluationError, match="heldout.jsonl"):
        evaluate(EvalConfig(), tmp_path, root / "hf", root / "gguf", tmp_path / "r")
    with pytest.raises(EvaluationError, match=r"evaluate\.quant_types.*q2_k"):
        evaluate(EvalConfig(max_examples=1, max_length=64, quant_types=["q2_k"], eval_base=False),
                 root / "data", root / "hf", root / "gguf", tmp_path / "r2")


def test_invalid_eval_settings_name_the_field():
    with pytest.raises(EvalConfigError, match=r"evaluate\.repeats"):
        EvalConfig.from_dict({"repeats": 0})
    with pytest.raises(EvalConfigError, match=r"evaluate\.margin"):
        EvalConfig.from_dict({"margin": -2})
    with pytest.raises(EvalConfigError, match=r"evaluate\.quant_types"):
        EvalConfig.from_dict({"quant_types": ["q7"]})
    with pytest.raises(EvalConfigError, match=r"evaluate\.bogus"):
        EvalConfig.from_dict({"bogus": 1})
