"""Run docling's standard PDF pipeline through our loader and chunker; print what happened as one JSON line.

    python tests/components/index/standard_pdf_probe.py PDF WORKDIR

Run by tests/components/index/test_standard_pdf.py in a process of its own, with the layout packages
(``.venv/layout-extras``) on ``PYTHONPATH``: PyPI's torchvision is a CUDA build that only imports beside this project's
CPU torch through :func:`components.index.standard_pdf.import_torchvision`, so it must never reach the test session.

Stand-in at the Hub boundary: the layout weights (docling-project/docling-layout-heron) come from the Hugging Face Hub,
unreachable here, so this saves a randomly initialised RT-DETR v2 detector (heron's model family, shrunk: a small ResNet
backbone, one encoder and two decoder layers) where docling expects heron. Its regions and labels are meaningless;
docling, transformers, torch, torchvision, our loader and chunker are real.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

LABELS = ["caption", "footnote", "formula", "list_item", "page_footer", "page_header", "picture", "section_header",
          "table", "text", "title", "document_index", "code", "checkbox_selected", "checkbox_unselected", "form",
          "key_value_region"]
#: detections per page the stand-in is tuned to (a real page has ~10-40 regions; an untuned random model finds all 100)
REGIONS_PER_PAGE = 20


def save_stand_in_layout_model(artifacts: Path, pdf: Path) -> None:
    import pypdfium2 as pdfium
    import torch
    from transformers import RTDetrImageProcessor, RTDetrResNetConfig, RTDetrV2Config, RTDetrV2ForObjectDetection

    from components.index.standard_pdf import layout_weights

    backbone = RTDetrResNetConfig(layer_type="basic", depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512],
                                  embedding_size=64, out_features=["stage2", "stage3", "stage4"])
    config = RTDetrV2Config(backbone_config=backbone, encoder_in_channels=[128, 256, 512], encoder_layers=1,
                            decoder_layers=2, num_queries=100, id2label=dict(enumerate(LABELS)),
                            label2id={label: i for i, label in enumerate(LABELS)})
    torch.manual_seed(0)
    model = RTDetrV2ForObjectDetection(config).eval()
    processor = RTDetrImageProcessor(size={"height": 640, "width": 640}, do_normalize=False, do_pad=False)
    # Shift the class biases so ~REGIONS_PER_PAGE queries score above 0.5 on the first page, as a trained model's do.
    document = pdfium.PdfDocument(str(pdf))
    image = document[0].render(scale=1.0).to_pil().convert("RGB")
    document.close()
    with torch.inference_mode():
        best = model(**processor(images=[image], return_tensors="pt")).logits[0].max(-1).values
        shift = float(best.sort(descending=True).values[REGIONS_PER_PAGE])
        for name, parameter in model.named_parameters():
            if "class_embed" in name and name.endswith("bias"):
                parameter -= shift
    target = layout_weights(artifacts)
    model.save_pretrained(target)
    processor.save_pretrained(target)


def main(pdf: Path, workdir: Path) -> dict:
    from components.index.standard_pdf import TABLEFORMER_ACCURATE, import_torchvision

    torchvision = import_torchvision()  # first, before transformers imports it
    import torch
    from docling.datamodel.base_models import InputFormat
    from docling.pipeline.standard_pdf_pipeline import StandardPdfPipeline

    from components.index.chunking import ChunkSettings, chunk_document, make_chunker
    from components.index.load import LoadError, LoadSettings, build_converter, check_layout_models, load_documents

    artifacts = workdir / "layout-models"
    save_stand_in_layout_model(artifacts, pdf)
    option = build_converter(LoadSettings(layout_models=str(artifacts))).format_to_options[InputFormat.PDF]

    passes: list[int] = []  # images per forward pass of the layout model, from a global torch forward hook

    def count(module, inputs, output):
        if type(module).__name__ == "RTDetrV2ForObjectDetection":
            passes.append(int(inputs[0].shape[0]) if inputs else 1)

    hook = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        report = load_documents([pdf], LoadSettings(layout_models=str(artifacts)))
    finally:
        hook.remove()
    (loaded,) = report.documents
    chunks = chunk_document(loaded.document, loaded.source, loaded.doc_id, make_chunker(ChunkSettings()))
    labels = sorted({str(item.label) for item, _ in loaded.document.iterate_items()})

    tables_before = check_layout_models(artifacts)
    (artifacts / TABLEFORMER_ACCURATE).mkdir(parents=True)
    (artifacts / TABLEFORMER_ACCURATE / "tm_config.json").write_text("{}")
    tables_after = check_layout_models(artifacts)
    sys.modules["docling_ibm_models"] = None  # as if docling-ibm-models were not installed
    try:
        check_layout_models(artifacts)
        refusal = None
    except LoadError as exc:
        refusal = str(exc)
    shutil.rmtree(artifacts / TABLEFORMER_ACCURATE.parts[0])  # leave the stand-in layout weights alone for the CLI run
    return {
        "torchvision": torchvision.__version__,
        "pipeline": option.pipeline_cls.__name__,
        "is_standard": option.pipeline_cls is StandardPdfPipeline,
        "do_ocr": option.pipeline_options.do_ocr,
        "do_table_structure": option.pipeline_options.do_table_structure,
        "threads": option.pipeline_options.accelerator_options.num_threads,
        "skipped": [s.source for s in report.skipped],
        "pages": loaded.pages,
        "layout_images": sum(passes),
        "labels": labels,
        "text": " ".join(loaded.document.export_to_text().split()),
        "chunk_pages": sorted({p for c in chunks for p in c.pages}),
        "chunk_indexes": [c.chunk_index for c in chunks],
        "tables_without_tableformer": tables_before,
        "tables_with_tableformer": tables_after,
        "refusal_without_docling_ibm_models": refusal,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
