"""docling's standard PDF pipeline (layout model, optionally TableFormer): what it needs and how it is configured.

Used when ``layout_models`` points at docling's downloaded weights; without it PDFs go through docling's native
pipeline, which needs no model (components/index/load.py). The weights folder uses docling's naming, the Hub repo id
with ``/`` as ``--``::

    DIR/docling-project--docling-layout-heron/            layout model (required): config.json + weights
    DIR/docling-project--docling-models/model_artifacts/tableformer/accurate/
                                                          TableFormer (optional): tables get rows and columns

``docling-tools models download-hf-repo docling-project/docling-layout-heron -o DIR`` (and ``.../docling-models``
for tables) fetches them where the Hub is reachable.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: where TableFormer's "accurate" weights sit under the weights folder (docling's layout for docling-models)
TABLEFORMER_ACCURATE = Path("docling-project--docling-models") / "model_artifacts" / "tableformer" / "accurate"
#: docling runs its models with 4 threads unless told otherwise; more than the CPUs granted only slows it down
MAX_THREADS = 4

#: where `make install` puts torchvision, docling-ibm-models and OpenCV, off the virtualenv's default path: PyPI's
#: torchvision is a CUDA build that breaks every transformers model load in a process that has not imported it
#: through :func:`import_torchvision` first. Only a process that checks for or runs the standard pipeline adds it
#: (images install the packages normally, and then this folder does not exist).
LAYOUT_EXTRAS = Path(sys.prefix) / "layout-extras"

_torchvision_schemas: Any = None  # the torch.library fragment that keeps the declared schemas alive


class LayoutModelsError(ValueError):
    """The weights folder or the packages the standard pipeline needs are missing; the message says what to do."""


def layout_weights(artifacts: Path) -> Path:
    """The layout model's folder under ``artifacts`` (it may not exist)."""
    from docling.datamodel.stage_model_specs import OBJECT_DETECTION_LAYOUT_HERON

    return artifacts / OBJECT_DETECTION_LAYOUT_HERON.model_spec.repo_id.replace("/", "--")


def has_table_weights(artifacts: Path) -> bool:
    """Whether ``artifacts`` holds TableFormer's weights (tables are then structured into rows and columns)."""
    return (artifacts / TABLEFORMER_ACCURATE / "tm_config.json").is_file()


def import_torchvision() -> Any:
    """Import torchvision, also where its compiled ops cannot load (a CUDA build of it beside CPU-only torch).

    torchvision is meant to work without its C++ ops (models and transforms are Python), but 0.28 registers fake
    kernels for ``nms`` and ``qnms`` without checking that the ops exist, so the import itself fails with
    "operator torchvision::nms does not exist". Declaring those two schemas first lets the import finish; ``nms`` then
    raises torchvision's own "Couldn't load custom C++ ops" error, and docling's layout and table stages never call it.
    A torchvision built for this torch imports on the first try and is returned as it is. Call it before anything
    imports transformers' modeling code, which imports torchvision whenever it is installed. Where torchvision is not
    installed but `make install` left it in :data:`LAYOUT_EXTRAS`, that folder joins ``sys.path`` first.
    """
    global _torchvision_schemas
    try:
        import torchvision

        return torchvision
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision" or not (LAYOUT_EXTRAS / "torchvision").is_dir() or str(LAYOUT_EXTRAS) in sys.path:
            raise
        sys.path.append(str(LAYOUT_EXTRAS))  # after site-packages: it only adds what the virtualenv lacks
        log.info("event=layout_extras path=%s", LAYOUT_EXTRAS)
        return import_torchvision()
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-initialised package from the failed import
    if _torchvision_schemas is None:
        fragment = torch.library.Library("torchvision", "FRAGMENT")
        fragment.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        fragment.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_schemas = fragment
    import torchvision

    log.info("event=torchvision_without_ops version=%s reason=compiled ops do not load beside this torch",
             torchvision.__version__)
    return torchvision


def check_layout_models(artifacts: Path) -> bool:
    """Raise :class:`LayoutModelsError` unless the standard pipeline can start; return whether tables are on.

    Checked before any document is read: otherwise docling fails on the first PDF and every PDF is skipped with the
    same message. Needed: the layout model's folder, and torchvision (docling imports it while it sets up the
    pipeline, tables or not); with TableFormer's weights present also docling-ibm-models and OpenCV.
    """
    if not artifacts.is_dir():
        raise LayoutModelsError(f"{artifacts} is not a folder")
    weights = layout_weights(artifacts)
    if not (weights / "config.json").is_file():
        repo_id = weights.name.replace("--", "/")
        raise LayoutModelsError(
            f"{artifacts} holds no layout weights: expected {weights}/ with config.json (download them where the Hub "
            f"is reachable: docling-tools models download-hf-repo {repo_id} -o {artifacts})"
        )
    try:
        import_torchvision()
    except Exception as exc:  # noqa: BLE001 - missing (ImportError) or built for another torch (RuntimeError, OSError)
        raise LayoutModelsError(
            f"docling's standard PDF pipeline needs torchvision, which cannot be imported here "
            f"({type(exc).__name__}: {exc}); install the torchvision release built for this torch (for CPU torch: "
            "pip install torchvision --index-url https://download.pytorch.org/whl/cpu), or leave it empty for the "
            "native PDF pipeline"
        ) from None
    tables = has_table_weights(artifacts)
    if tables:
        for module, package in (("docling_ibm_models", "docling-ibm-models"), ("cv2", "opencv-python-headless")):
            try:
                __import__(module)
            except ImportError as exc:
                raise LayoutModelsError(
                    f"{artifacts / TABLEFORMER_ACCURATE} holds TableFormer weights, which need {package} ({exc}); "
                    f"install it (pip install --no-deps {package}: docs/index.md), or remove that folder to index "
                    "without table structure"
                ) from None
    return tables


def standard_pdf_options(artifacts: Path, *, tables: bool, document_timeout_s: float) -> Any:
    """docling ``PdfPipelineOptions`` for the weights in ``artifacts``, as :func:`check_layout_models` found them."""
    from docling.datamodel.accelerator_options import AcceleratorOptions
    from docling.datamodel.pipeline_options import PdfPipelineOptions

    threads = max(1, min(MAX_THREADS, len(os.sched_getaffinity(0))))
    log.info("event=pdf_pipeline pipeline=standard layout_models=%s tables=%s threads=%d", artifacts,
             "on" if tables else "off", threads)
    return PdfPipelineOptions(
        artifacts_path=str(artifacts),
        do_ocr=False,
        do_table_structure=tables,
        document_timeout=document_timeout_s,
        accelerator_options=AcceleratorOptions(num_threads=threads),
    )
