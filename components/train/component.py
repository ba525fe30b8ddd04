"""KFP component: LoRA fine-tuning with resumable checkpoints (logic in trainer.py).

GPU placement (accelerator, node selector, toleration, HF_TOKEN secret, PVC) is applied by the pipeline; set
``RAGTUNE_HOME`` (or ``checkpoint_location``) to the mounted PVC so a retried pod resumes from its checkpoints.
"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from pipelines.images import image


@dsl.component(base_image=image("train"), install_kfp_package=False)
def train_model(
    dataset: Input[Dataset],
    model: Output[Model],
    adapter: Output[Model],
    report: Output[Artifact],
    metrics: Output[Metrics],
    config: dict,
):
    """Fine-tune the base model with LoRA on the prepared dataset.

    Args:
        dataset: the data step's output (``train.jsonl`` and its manifest).
        model: folder receiving ``merged/`` (merged HF model), ``adapter/`` and ``report.json``.
        adapter: the peft adapter alone (small; ``adapter_config.json``, ``adapter_model.safetensors``).
        report: folder receiving ``report.json`` (loss curve, tokens/s, peak memory, trainable %).
        metrics: the report's scalars as KFP metrics.
        config: TrainConfig fields (see docs/finetune-training.md).
    """
    import logging
    import shutil
    from pathlib import Path

    from components.train.config import TrainConfig
    from components.train.trainer import ADAPTER_DIR, REPORT_FILE, train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train(TrainConfig.from_dict(config), dataset.path, model.path)
    shutil.copytree(result.adapter_dir, adapter.path, dirs_exist_ok=True)
    Path(report.path).mkdir(parents=True, exist_ok=True)
    shutil.copy2(result.report_path, Path(report.path) / REPORT_FILE)
    shutil.copy2(Path(model.path) / "manifest.json", Path(report.path) / "manifest.json")

    rep = result.report
    for key in ("global_step", "final_loss", "tokens_per_second", "train_seconds", "peak_memory_bytes",
                "trainable_percent", "trainable_params"):
        if rep.get(key) is not None:
            metrics.log_metric(key, float(rep[key]))
    model.metadata.update({"base_model": rep["config"]["base_model"], "run_name": rep["run_name"],
                           "backend": rep["backend"], "adapter_subdir": ADAPTER_DIR, "merged_subdir": "merged"})
