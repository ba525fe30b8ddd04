"""KFP components of the index pipeline: thin wrappers around :mod:`components.index.steps`.

Imports live inside the functions, so each runs in the ``components`` image (or, locally, in this interpreter
through ``kfp.local``) without importing the others' dependencies at compile time.
"""

# No `from __future__ import annotations` here: KFP reads the parameter annotations as real types.
from kfp import dsl

from pipelines.images import image

BASE_IMAGE = image("components")


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def load_documents(sources: list, layout_models: str, documents: dsl.Output[dsl.Dataset]):
    """Convert PDF, Markdown, HTML and DOCX files with docling.

    Args:
        sources: files and/or folders to read; unreadable or unsupported files are reported and skipped.
        layout_models: folder with docling layout weights for the standard PDF pipeline; empty = the native
            (model-free) PDF pipeline.
        documents: folder of DoclingDocument JSON files, with documents.json, skipped.json and a manifest.
    """
    import logging

    from components.index.steps import run_load

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_load([str(s) for s in sources], documents.path, layout_models=layout_models or None)
    documents.metadata.update({"documents": result["documents"], "skipped": len(result["skipped"])})


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def chunk_documents(documents: dsl.Input[dsl.Dataset], max_tokens: int, embedding_model: str,
                    chunks: dsl.Output[dsl.Dataset]):
    """Split documents with docling's HybridChunker, counting tokens with the embedding model's tokenizer.

    Args:
        documents: output of load_documents.
        max_tokens: most tokens per chunk, headings included.
        embedding_model: model folder or id whose tokenizer counts tokens; empty = the packaged all-MiniLM-L6-v2.
        chunks: chunks.parquet (source, pages, headings, chunk index, text, contextualized text) and a manifest.
    """
    import logging

    from components.index.steps import run_chunk

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_chunk(documents.path, chunks.path, max_tokens=max_tokens, tokenizer=embedding_model or None)
    chunks.metadata.update(result)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def embed_chunks(chunks: dsl.Input[dsl.Dataset], embedding_model: str, batch_size: int,
                 embeddings: dsl.Output[dsl.Dataset]):
    """Embed each chunk's contextualized text with sentence-transformers (L2-normalized, batched).

    Args:
        chunks: output of chunk_documents.
        embedding_model: model folder or id; empty = the packaged all-MiniLM-L6-v2 (384-d).
        batch_size: texts per forward pass.
        embeddings: chunks.parquet with an embedding column, and a manifest naming the model.
    """
    import logging

    from components.index.steps import run_embed

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_embed(chunks.path, embeddings.path, embedding_model=embedding_model or None, batch_size=batch_size)
    embeddings.metadata.update(result)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def store_embeddings(embeddings: dsl.Input[dsl.Dataset], store: str, store_dir: str, ann: str,
                     hopsworks_host: str, hopsworks_project: str, index: dsl.Output[dsl.Artifact]):
    """Upsert into the embedding store and (re)build the FAISS search index in store_dir.

    Args:
        embeddings: output of embed_chunks.
        store: "local" (Parquet + FAISS in store_dir) or "hopsworks" (feature group book_embeddings v1; the API key
            comes from the HOPSWORKS_API_KEY environment variable).
        store_dir: the local index directory (a mounted volume in the cluster); the retriever's --index.
        ann: search index kind: "flat" (exact), "hnsw" or "ivf".
        hopsworks_host: Hopsworks host (hopsworks store only).
        hopsworks_project: Hopsworks project (hopsworks store only).
        index: a JSON summary of the upsert (added / removed / unchanged chunks) and where the index is.
    """
    import json
    import logging
    import os

    from components.index.steps import run_store

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_store(embeddings.path, store=store, store_dir=store_dir, ann=ann,
                       hopsworks_host=hopsworks_host, hopsworks_project=hopsworks_project)
    os.makedirs(os.path.dirname(index.path) or ".", exist_ok=True)
    with open(index.path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    index.metadata.update({"store": store, "store_dir": store_dir, "ann": ann, **result["stats"]})
