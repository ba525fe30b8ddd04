"""KFP component: publish the GGUF files to the model store and the catalog (logic in publish.py)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from pipelines.images import image


@dsl.component(base_image=image("components"), install_kfp_package=False)
def publish_model(gguf: Input[Model], report: Input[Artifact], config: dict) -> str:
    """Copy the GGUF files and manifest to the store and upsert the catalog; return the catalog entry names.

    Args:
        gguf: the export step's output.
        report: the evaluate step's report folder (its metrics go into the manifest and catalog).
        config: PublishConfig fields (store, store_dir, catalog_path, quant_types, ...).
    """
    import logging

    from components.evaluate.evaluate import load_report
    from components.publish.config import PublishConfig
    from components.publish.publish import publish

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = publish(PublishConfig.from_dict(config), gguf.path, load_report(report.path))
    return ",".join(result.entries)
