"""KFP component: export the trained model to GGUF quantizations (logic in gguf_export.py)."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from pipelines.images import image


@dsl.component(base_image=image("components"), install_kfp_package=False)
def export_gguf(model: Input[Model], gguf: Output[Model], config: dict):
    """Merge, convert to GGUF and quantize the fine-tuned model.

    Args:
        model: the train step's output (``merged/`` and ``adapter/`` inside).
        gguf: folder receiving the GGUF files and their manifest.
        config: ExportConfig fields (model_id, quant_types, outtype, ...).
    """
    import logging

    from components.export.config import ExportConfig
    from components.export.gguf_export import export_model

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = export_model(ExportConfig.from_dict(config), model.path, gguf.path)
    gguf.metadata.update({
        "model_id": result.model_id,
        "base_model": result.base_model or "",
        "quant_types": [f.quant for f in result.files],
        "sizes": {f.quant: f.size for f in result.files},
    })
