"""KFP component: prepare the chat dataset (logic in prepare.py)."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from pipelines.images import image


@dsl.component(base_image=image("components"), install_kfp_package=False)
def prepare_data(dataset: Output[Dataset], config: dict):
    """Read, standardize and split conversations into train / held-out JSONL.

    Args:
        dataset: folder receiving ``train.jsonl``, ``heldout.jsonl``, ``stats.json`` and their manifest.
        config: DataConfig fields (source, split, subset, heldout_size, max_examples, seed).
    """
    import logging

    from components.data.prepare import DataConfig, prepare_dataset

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stats = prepare_dataset(DataConfig.from_dict(config), dataset.path)
    dataset.metadata.update({
        "source": stats.source,
        "train": stats.train,
        "heldout": stats.heldout,
        "skipped": stats.skipped,
        "skipped_by_reason": stats.skipped_by_reason,
    })
