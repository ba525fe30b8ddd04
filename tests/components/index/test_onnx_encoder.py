"""The ONNX Runtime query encoder: same vectors as the sentence-transformers embedder, or refused.

Real models only: the packaged all-MiniLM-L6-v2 exported for real, and, for the refusal, the same weights assembled
into a sentence-transformers pipeline with CLS pooling (a real model whose vectors mean pooling cannot reproduce).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from components.index.onnx_encoder import OnnxEncoder, OnnxEncoderUnavailable  # noqa: E402

TEXTS = [
    "How do I create a virtual environment?",
    "a",
    "Exceptions that are not handled stop the program and print a traceback. " * 40,  # truncated at 256 tokens
    "Ünïcödé, emoji 🐍 and CJK 虚拟环境 survive tokenization.",
]


@pytest.fixture(scope="module")
def onnx_encoder(embedder) -> OnnxEncoder:
    return OnnxEncoder.from_embedder(embedder, threads=1)


def test_vectors_match_the_embedder_one_by_one_and_in_a_padded_batch(onnx_encoder, embedder):
    expected = embedder.encode(TEXTS)
    batch = onnx_encoder.encode(TEXTS)
    one_by_one = np.vstack([onnx_encoder.encode([t]) for t in TEXTS])
    for got in (batch, one_by_one):
        assert got.shape == expected.shape == (len(TEXTS), embedder.dim)
        assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_same_neighbours_as_the_embedder_on_the_sample_corpus(onnx_encoder, embedder, corpus_vectors):
    questions = ["How do I make a virtual environment?", "What does a try statement do?", "How to import a module?"]
    for q_onnx, q_torch in zip(onnx_encoder.encode(questions), embedder.encode(questions)):
        assert list(np.argsort(-(corpus_vectors @ q_onnx))[:10]) == list(np.argsort(-(corpus_vectors @ q_torch))[:10])


def test_empty_and_wrong_input(onnx_encoder, embedder):
    assert onnx_encoder.encode([]).shape == (0, embedder.dim)
    with pytest.raises(TypeError, match="list of strings"):
        onnx_encoder.encode("not a list")


def test_a_model_that_does_not_mean_pool_is_refused(embedder):
    from sentence_transformers import SentenceTransformer, models

    from components.index.embed import Embedder

    transformer = models.Transformer(embedder.model_name)
    cls_pooled = SentenceTransformer(
        modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="cls"),
                 models.Normalize()],
        device="cpu",
    )
    other = Embedder.__new__(Embedder)
    other.model_name, other.batch_size, other.device, other._model = "minilm-cls", 8, "cpu", cls_pooled
    other.dim = embedder.dim
    with pytest.raises(OnnxEncoderUnavailable, match="does not reproduce 'minilm-cls'"):
        OnnxEncoder.from_embedder(other, threads=1)


def test_attention_is_fused_and_the_loaded_model_keeps_its_attention(embedder, caplog):
    import logging

    config = embedder._model[0].auto_model.config
    before = config._attn_implementation
    with caplog.at_level(logging.INFO, logger="components.index.onnx_encoder"):
        OnnxEncoder.from_embedder(embedder, threads=1)
    fused = [r.getMessage() for r in caplog.records if "event=onnx_encoder_fused" in r.getMessage()]
    assert fused and "Attention:6" in fused[0] and "SkipLayerNormalization:12" in fused[0], fused
    assert config._attn_implementation == before  # exported eagerly, then put back for the torch path


def test_a_graph_the_optimizer_cannot_read_is_kept_as_it_is():
    from types import SimpleNamespace

    from components.index.onnx_encoder import _fused

    assert _fused(b"not an onnx graph", SimpleNamespace(num_attention_heads=12, hidden_size=384)) == b"not an onnx graph"
    assert _fused(b"graph", SimpleNamespace()) == b"graph"


@pytest.fixture(scope="module")
def int8_encoder(embedder) -> OnnxEncoder:
    return OnnxEncoder.from_embedder(embedder, threads=1, int8=True)


def test_int8_vectors_are_close_to_the_embedder_but_not_the_same(int8_encoder, embedder):
    expected = embedder.encode(TEXTS)
    got = int8_encoder.encode(TEXTS)
    assert int8_encoder.int8 and got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(got * expected, axis=1)
    assert cosines.min() >= 0.98, cosines
    assert np.abs(got - expected).max() > 1e-3  # the weights really are rounded: float32 export agrees to ~1e-6


def test_int8_encoder_keeps_recall_and_mostly_the_same_neighbours(int8_encoder, embedder, corpus_index_dir):
    from components.index.qa import load_qa, recall_at_k
    from components.index.search import load_index
    from tests.components.index.conftest import QA_SET

    index, items = load_index(corpus_index_dir), load_qa(QA_SET)
    exact = recall_at_k(index, embedder, items, k=5)
    int8 = recall_at_k(index, int8_encoder, items, k=5)
    assert int8.recall >= 0.8, f"recall@5 = {int8.recall:.3f}; missed: {int8.misses}"
    assert int8.recall >= exact.recall - 1 / len(items)  # at most one question lost to rounding
    questions = [i.question for i in items]
    overlap = [
        len({h.chunk_id for h in a} & {h.chunk_id for h in b}) / 10
        for a, b in zip(index.search(int8_encoder.encode(questions), 10), index.search(embedder.encode(questions), 10))
    ]
    assert np.mean(overlap) >= 0.9, overlap



def test_rust_tokenizer_gives_the_transformers_ids_padded_and_truncated(onnx_encoder, embedder):
    tokenizer = embedder.tokenizer
    expected = tokenizer(TEXTS, padding=True, truncation=True, max_length=embedder.max_seq_length, return_tensors="np")
    assert onnx_encoder._fast is not None
    encodings = onnx_encoder._fast.encode_batch(TEXTS)
    assert np.array([e.ids for e in encodings]).shape == expected["input_ids"].shape == (len(TEXTS), 256)
    np.testing.assert_array_equal(np.array([e.ids for e in encodings]), expected["input_ids"])
    np.testing.assert_array_equal(np.array([e.attention_mask for e in encodings]), expected["attention_mask"])
    np.testing.assert_array_equal(np.array([e.type_ids for e in encodings]), expected["token_type_ids"])
