"""RetrieverModel without a server: which embedding model it picks for an index, and search before load."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.index.embed import default_embedding_model
from serving.retriever.model import RetrieverModel
from serving.retriever.protocol import Query
from serving.retriever.settings import load_settings


def model_for(tmp_path: Path, **overrides) -> RetrieverModel:
    return RetrieverModel(load_settings(index_dir=str(tmp_path), **overrides))


def test_index_built_elsewhere_with_the_default_model_uses_the_local_copy(tmp_path):
    default = Path(default_embedding_model())
    recorded = str(Path("/other/machine/site-packages") / default.parent.name / default.name)
    assert model_for(tmp_path)._embedding_model_for(recorded) == str(default)


def test_other_recorded_models_are_kept_and_configuration_wins(tmp_path):
    assert model_for(tmp_path)._embedding_model_for("/other/machine/my-model") == "/other/machine/my-model"
    assert model_for(tmp_path)._embedding_model_for("org/hub-model") == "org/hub-model"
    assert model_for(tmp_path)._embedding_model_for(str(tmp_path)) == str(tmp_path)
    assert model_for(tmp_path)._embedding_model_for("") is None
    configured = model_for(tmp_path, embedding_model="org/configured")
    assert configured._embedding_model_for("/other/machine/my-model") == "org/configured"


def test_search_before_load_is_refused(tmp_path):
    model = model_for(tmp_path)
    assert model.ready is False
    with pytest.raises(RuntimeError, match="not loaded"):
        model.search([Query("q", 1)])


@pytest.mark.parametrize("mode, encoder", [("torch", "Embedder"), ("onnx", "OnnxEncoder"), ("auto", "OnnxEncoder")])
def test_query_encoder_setting_picks_the_encoder_and_results_agree(sample_index, mode, encoder):
    pytest.importorskip("onnxruntime")
    model = RetrieverModel(load_settings(index_dir=str(sample_index), threads=1, query_encoder=mode))
    assert model.load() is True
    assert type(model.encoder).__name__ == encoder
    hits = model.search([Query("approximate nearest neighbour graph", 3)])[0]
    expected = model.index.search(model.embedder.encode(["approximate nearest neighbour graph"]), 3)[0]
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in expected]


def test_int8_query_encoder_setting_loads_the_quantized_export(sample_index):
    pytest.importorskip("onnxruntime")
    model = RetrieverModel(load_settings(index_dir=str(sample_index), threads=1, query_encoder="onnx-int8"))
    assert model.load() is True
    assert type(model.encoder).__name__ == "OnnxEncoder" and model.encoder.int8 is True
    top = model.search([Query("approximate nearest neighbour graph", 1)])[0]
    assert top[0].chunk_id == model.index.search(model.embedder.encode(["approximate nearest neighbour graph"]), 1)[0][0].chunk_id
