"""docling's standard PDF pipeline (``--layout-models``), run for real on the sample PDF (refusals: test_index_load_chunk).

The run happens in a process of its own (tests/components/index/standard_pdf_probe.py) with the layout packages that
`make install` puts in ``.venv/layout-extras`` on its path: PyPI's torchvision is a CUDA build that breaks every
transformers model load beside this project's CPU torch unless it is imported through
:func:`components.index.standard_pdf.import_torchvision` first, so it is kept out of the test session.

Stand-in at the Hub boundary: the layout weights come from the Hugging Face Hub (unreachable here); the probe saves a
randomly initialised RT-DETR v2 detector in their place (see the probe's docstring). Everything else is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.components.index.conftest import PDF

PROBE = Path(__file__).with_name("standard_pdf_probe.py")
LAYOUT_EXTRAS = Path(sys.prefix) / "layout-extras"


def _first_pages(source: Path, target: Path, pages: int) -> Path:
    import pypdfium2 as pdfium

    original, copy = pdfium.PdfDocument(str(source)), pdfium.PdfDocument.new()
    try:
        copy.import_pages(original, list(range(pages)))
        copy.save(str(target))
    finally:
        copy.close()
        original.close()
    return target


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> dict:
    if not (LAYOUT_EXTRAS / "torchvision").is_dir():
        pytest.skip(f"{LAYOUT_EXTRAS} is missing: `make install` puts torchvision and docling-ibm-models there")
    workdir = tmp_path_factory.mktemp("standard-pdf")
    pdf = _first_pages(PDF, workdir / "modules_first_pages.pdf", 2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(LAYOUT_EXTRAS), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, str(PROBE), str(pdf), str(workdir)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "pdf": str(pdf), "layout_models": str(workdir / "layout-models")}


@pytest.mark.slow
def test_layout_models_selects_the_standard_pipeline_without_tables_or_ocr(probe):
    assert probe["is_standard"], probe["pipeline"]
    assert probe["do_ocr"] is False
    assert probe["do_table_structure"] is False and probe["tables_without_tableformer"] is False
    assert 1 <= probe["threads"] <= 4


@pytest.mark.slow
def test_the_layout_model_runs_on_every_page_and_the_text_reaches_the_chunks(probe):
    assert probe["skipped"] == [] and probe["pages"] == 2
    assert probe["layout_images"] == 2  # one page image through the layout model per page
    # the words come from the PDF's text layer, whatever regions the random detector drew around them
    for phrase in ("If you quit from the Python interpreter", "its own private namespace"):
        assert phrase in probe["text"], phrase
    assert probe["chunk_pages"] == [1, 2]
    assert probe["chunk_indexes"] == list(range(len(probe["chunk_indexes"])))


@pytest.mark.slow
def test_tableformer_weights_turn_tables_on_and_need_docling_ibm_models(probe):
    assert probe["tables_with_tableformer"] is True
    refusal = probe["refusal_without_docling_ibm_models"]
    assert refusal and refusal.startswith("layout_models ") and "holds TableFormer weights, which need " \
        "docling-ibm-models" in refusal and "remove that folder to index without table structure" in refusal



@pytest.mark.slow
def test_ragtune_index_with_layout_models_runs_the_standard_pipeline_on_a_make_installed_machine(probe, tmp_path):
    """The whole command, as a user types it: no PYTHONPATH, the layout packages found where `make install` put them
    (only the load step's process adds that folder), the probe's stand-in weights, the index written and loadable."""
    from components.index.search import load_index

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([str(Path(sys.executable).parent / "ragtune"), "index", "--source", probe["pdf"],
                           "--layout-models", probe["layout_models"], "--out", str(tmp_path / "idx")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    log = done.stdout + done.stderr
    assert f"event=layout_extras path={LAYOUT_EXTRAS}" in log
    assert f"event=pdf_pipeline pipeline=standard layout_models={probe['layout_models']} tables=off" in log
    index = load_index(tmp_path / "idx")
    assert index.size >= 2
    assert {p for pages in index._pages for p in pages} == {1, 2}
    assert {Path(source).name for source in index._sources} == {Path(probe["pdf"]).name}
