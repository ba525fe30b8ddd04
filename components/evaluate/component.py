"""KFP component: held-out perplexity of base, fine-tuned and GGUF models, and the gate (logic in evaluate.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from pipelines.images import image


@dsl.component(base_image=image("components"), install_kfp_package=False)
def evaluate_model(
    dataset: Input[Dataset],
    model: Input[Model],
    gguf: Input[Model],
    config: dict,
    report: Output[Artifact],
    metrics: Output[Metrics],
) -> bool:
    """Score the models on the held-out set; return whether the fine-tuned model may be published (the gate).

    The gate is the single return value (``Output``) on purpose: kfp 2.17.3's local runner resolves a ``dsl.If``
    condition only on a task's ``Output``, not on a named output of a NamedTuple.

    Args:
        dataset: the data step's output (``heldout.jsonl``).
        model: the train step's output (the merged fine-tuned model).
        gguf: the export step's output (every GGUF quantization).
        config: EvalConfig fields (max_examples, repeats, seed, margin, ...).
        report: folder receiving report.json, report.md and a manifest.
        metrics: perplexities and the relative change, as KFP metrics.
    """
    import logging

    from components.evaluate.config import EvalConfig
    from components.evaluate.evaluate import evaluate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = evaluate(EvalConfig.from_dict(config), dataset.path, model.path, gguf.path, report.path)
    for key, value in result.metrics().items():
        metrics.log_metric(key, value)
    report.metadata["gate"] = result.gate.reason
    return bool(result.gate.passed)
