"""The embedding model exported to ONNX and run with ONNX Runtime, for encoding short queries fast on CPU.

A query is one short text: at that size PyTorch spends most of its time per operator (dispatch, weight packing)
rather than computing, and ONNX Runtime's fused graph (its BERT attention, layer-norm and GELU kernels) is 2-3x
faster on the same threads (docs/benchmarks.md).
Indexing keeps :class:`~components.index.embed.Embedder` (large batches, where PyTorch is efficient).

The export is built from the very model the embedder loaded, in memory at start-up (a second or two, no file), and
is only used after it reproduces the embedder's vectors on probe texts: a model whose sentence-transformers
pipeline is not transformer -> mean pooling -> normalize (CLS pooling, a Dense head) fails that check, and the
caller keeps PyTorch.
"""

from __future__ import annotations

import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from components.index.embed import Embedder

log = logging.getLogger(__name__)

#: texts the export must reproduce before it is used (a short and a long one, so padding and truncation count)
PROBE_TEXTS = (
    "How do I create a virtual environment?",
    "Explain, step by step and with an example, how exceptions propagate through nested function calls when no "
    "handler catches them, and what the interpreter prints. " * 6,
)
#: smallest cosine similarity to the embedder's vector that counts as the same vector
MIN_PROBE_COSINE = 0.9999
#: the same for the int8 encoder, whose weights are rounded to 8 bits (all-MiniLM-L6-v2 gives ~0.993 on the probes)
MIN_PROBE_COSINE_INT8 = 0.98


class OnnxEncoderUnavailable(RuntimeError):
    """The ONNX path cannot be used for this model here; the message says why (the caller falls back)."""


class OnnxEncoder:
    """``encode(texts)`` like :meth:`Embedder.encode`: unit-length float32 rows, the same vectors to ~1e-6.

    Build with :meth:`from_embedder`. With ``int8=True`` the weights are quantized to 8 bits (dynamic quantization,
    per output channel): ~40 % less encode time per query on AVX2 at a cosine of ~0.99 to the embedder's vectors.
    """

    def __init__(self, session: Any, tokenizer: Any, max_seq_length: int, dim: int, model_name: str,
                 int8: bool = False) -> None:
        self.int8 = int8
        self._session = session
        self._tokenizer = tokenizer
        self._fast = _rust_tokenizer(tokenizer, max_seq_length)
        self._inputs = [i.name for i in session.get_inputs()]
        self.max_seq_length = max_seq_length
        self.dim = dim
        self.model_name = model_name

    @classmethod
    def from_embedder(cls, embedder: Embedder, threads: int, *, int8: bool = False) -> OnnxEncoder:
        """Export ``embedder``'s transformer with mean pooling and normalization, and check it on probe texts.

        ``int8`` quantizes the exported weights to 8 bits; the probe check then accepts a cosine of
        :data:`MIN_PROBE_COSINE_INT8` instead of :data:`MIN_PROBE_COSINE`.

        Raises :class:`OnnxEncoderUnavailable` when onnxruntime/onnx are missing, the export or the quantization
        fails, or the exported model does not reproduce the embedder's vectors.
        """
        try:
            import onnxruntime as ort
            import torch
        except ImportError as exc:
            raise OnnxEncoderUnavailable(f"onnxruntime is not installed ({exc})") from None
        tokenizer = embedder.tokenizer
        transformer = embedder._model[0].auto_model.eval()
        sample = tokenizer(["probe"], return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        graph = io.BytesIO()
        # Eager attention exports as plain MatMul/Softmax, which ONNX Runtime's transformer optimizer fuses into its
        # Attention kernel (SDPA exports in a form it does not recognise); the loaded model is left as it was.
        attention = getattr(transformer.config, "_attn_implementation", None)
        try:
            if attention is not None:
                transformer.config._attn_implementation = "eager"
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's notes on traced control flow; the probe decides
                torch.onnx.export(
                    _mean_pooled(transformer, names),
                    tuple(sample[n] for n in names),
                    graph,
                    input_names=names,
                    output_names=["embedding"],
                    dynamic_axes={n: {0: "batch", 1: "tokens"} for n in names},
                    opset_version=17,
                    dynamo=False,
                )
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; any of them means "use torch"
            raise OnnxEncoderUnavailable(f"ONNX export of {embedder.model_name!r} failed: {exc}") from None
        finally:
            if attention is not None:
                transformer.config._attn_implementation = attention
        model_bytes = _fused(graph.getvalue(), transformer.config)
        if int8:
            model_bytes = _quantized(model_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # ONNX Runtime's workers spin after each run by default: between queries they would take the cores that
        # the FAISS search right after (and every other thread in the process) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        encoder = cls(session, tokenizer, embedder.max_seq_length, embedder.dim, embedder.model_name, int8=int8)
        expected = embedder.encode(list(PROBE_TEXTS))
        got = encoder.encode(list(PROBE_TEXTS))
        if got.shape != expected.shape:
            raise OnnxEncoderUnavailable(f"exported model gives shape {got.shape}, the embedder {expected.shape}")
        cosine = float(np.min(np.sum(got * expected, axis=1)))
        if cosine < (MIN_PROBE_COSINE_INT8 if int8 else MIN_PROBE_COSINE):
            raise OnnxEncoderUnavailable(
                f"exported model does not reproduce {embedder.model_name!r} (cosine {cosine:.5f}); its pipeline is "
                "probably not transformer -> mean pooling -> normalize"
            )
        log.info("event=onnx_encoder_ready model=%s threads=%d weights=%s probe_cosine=%.7f", embedder.model_name,
                 threads, "int8" if int8 else "float32", cosine)
        return encoder

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode ``texts`` into an ``(n, dim)`` float32 array of unit-length rows."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._fast is not None:
            encodings = self._fast.encode_batch(list(texts))
            columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
            feeds = {name: np.array([getattr(e, columns[name]) for e in encodings], dtype=np.int64)
                     for name in self._inputs}
        else:
            batch = self._tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_seq_length,
                                    return_tensors="np")
            feeds = {name: np.asarray(batch[name], dtype=np.int64) for name in self._inputs}
        (vectors,) = self._session.run(None, feeds)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _rust_tokenizer(tokenizer: Any, max_seq_length: int) -> Any:
    """The tokenizer's Rust ``tokenizers.Tokenizer``, set to truncate and pad as the transformers call does, or None.

    transformers' ``__call__`` wraps the same Rust tokenizer in ~0.1 ms of Python per query, a tenth of the
    predictor's overhead around the model at 1k chunks. The input names this returns ids for are the ONNX graph's
    (``input_ids``, ``attention_mask``, ``token_type_ids``); the probe check in :meth:`OnnxEncoder.from_embedder` and
    the tests compare the resulting vectors with the embedder's.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.pad_token is None or getattr(tokenizer, "padding_side", "right") != "right":
        return None
    from tokenizers import Tokenizer

    fast = Tokenizer.from_str(backend.to_str())  # a copy: the embedder's tokenizer keeps its own settings
    fast.enable_truncation(max_length=max_seq_length)
    fast.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                        pad_type_id=getattr(tokenizer, "pad_token_type_id", 0))
    return fast


def _fused(model_bytes: bytes, config: Any) -> bytes:
    """The graph with ONNX Runtime's BERT fusions (attention, layer norms, GELU): ~12 % faster per query on 2 cores.

    Returns the graph unchanged when the optimizer is unavailable or fails: the fusions are an optimisation, and the
    probe check after it decides whether the encoder is used at all.
    """
    heads, hidden = getattr(config, "num_attention_heads", None), getattr(config, "hidden_size", None)
    if not heads or not hidden:
        return model_bytes
    try:
        import onnx
        from onnxruntime.transformers.optimizer import optimize_model

        # The optimizer's modules log every fusion at INFO on loggers named after themselves; one line of ours says
        # what was fused.
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(("onnx_model", "fusion_", "onnxruntime.transformers")):
                logging.getLogger(name).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimized = optimize_model(onnx.load_from_string(model_bytes), model_type="bert", num_heads=heads,
                                       hidden_size=hidden, opt_level=0)
        fused = ",".join(f"{op}:{n}" for op, n in optimized.get_fused_operator_statistics().items() if n)
        log.info("event=onnx_encoder_fused fused=%s", fused or "none")
        return optimized.model.SerializeToString()
    except Exception as exc:  # noqa: BLE001 - any optimizer failure leaves the plain graph, which works
        log.warning("event=onnx_encoder_not_fused reason=%s", f"{type(exc).__name__}: {exc}")
        return model_bytes


def _quantized(model_bytes: bytes) -> bytes:
    """``model_bytes`` with its MatMul and Attention weights quantized to int8, per output channel.

    Activations are quantized per call from their own range (dynamic quantization), so no calibration data is needed.
    Per-channel scales keep the vectors at a cosine of ~0.993 to float32 for all-MiniLM-L6-v2 (one scale per tensor
    gives ~0.975).
    """
    try:
        import onnx
        from onnx.helper import make_opsetid
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxEncoderUnavailable(f"int8 quantization needs onnxruntime's quantization tools ({exc})") from None
    model = onnx.load_from_string(model_bytes)
    # The fused graph uses ONNX Runtime's contrib ops (Attention, SkipLayerNormalization) without declaring their
    # domain: ONNX Runtime does not mind, the quantizer's shape inference does.
    if not any(entry.domain == "com.microsoft" for entry in model.opset_import):
        model.opset_import.append(make_opsetid("com.microsoft", 1))
    root = logging.getLogger()
    advice = _DropRecords("pre-processing before quantization")  # a notebook tip logged on the root logger
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="ragtune-int8-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            target = Path(tmp) / "encoder-int8.onnx"
            quantize_dynamic(model, target, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return target.read_bytes()
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; each means "no int8 encoder"
        raise OnnxEncoderUnavailable(f"int8 quantization failed: {type(exc).__name__}: {exc}") from None
    finally:
        root.removeFilter(advice)


class _DropRecords(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _mean_pooled(transformer: Any, names: list[str]) -> Any:
    import torch

    class MeanPooled(torch.nn.Module):
        """Transformer -> mean over the real tokens -> unit length (all-MiniLM-L6-v2's sentence pipeline)."""

        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            kwargs = dict(zip(names, inputs))
            hidden = self.transformer(**kwargs).last_hidden_state
            mask = kwargs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    return MeanPooled()

