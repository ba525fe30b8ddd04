"""Split documents into retrievable chunks with docling's HybridChunker, counting tokens with the embedding model's
own tokenizer (loaded from its local folder, so nothing is downloaded).

Each chunk keeps its source, pages, headings and position; the text that gets embedded is the *contextualized* text
(headings + text), so a chunk about "else clause" under "Handling Exceptions" is found by either.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field

from components.index.store import Chunk, chunk_ids_for

log = logging.getLogger(__name__)


class ChunkSettings(BaseModel):
    """How documents are split."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(
        default=256, ge=16, le=8192, description="Most tokens per chunk (headings included), by the tokenizer below."
    )
    tokenizer: str | None = Field(
        default=None, description="Tokenizer folder or id; default: the embedding model's own (local) tokenizer."
    )
    merge_peers: bool = Field(default=True, description="Merge small neighbouring chunks under the same headings.")


def make_chunker(settings: ChunkSettings | None = None):
    """A HybridChunker whose token budget is counted by the embedding model's tokenizer."""
    from docling.chunking import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer

    from components.index.embed import resolve_model

    settings = settings or ChunkSettings()
    # max_tokens is always passed: without it the tokenizer wrapper asks the Hub for the model's limit.
    tokenizer = HuggingFaceTokenizer.from_pretrained(resolve_model(settings.tokenizer), max_tokens=settings.max_tokens)
    return HybridChunker(tokenizer=tokenizer, merge_peers=settings.merge_peers)


def _pages(doc_chunk: Any) -> list[int]:
    pages = {prov.page_no for item in doc_chunk.meta.doc_items for prov in (item.prov or [])}
    return sorted(pages)


def chunk_document(document: Any, source: str, doc_id: str, chunker: Any) -> list[Chunk]:
    """Chunks of one DoclingDocument, in reading order, with content-hash ids."""
    pieces = []
    for doc_chunk in chunker.chunk(dl_doc=document):
        text = doc_chunk.text.strip()
        if not text:
            continue
        pieces.append((doc_chunk, text, chunker.contextualize(chunk=doc_chunk)))
    ids = chunk_ids_for(doc_id, [ctx for _, _, ctx in pieces])
    return [
        Chunk(
            chunk_id=chunk_id,
            doc_id=doc_id,
            source=source,
            text=text,
            contextualized_text=ctx,
            pages=_pages(doc_chunk),
            headings=list(doc_chunk.meta.headings or []),
            chunk_index=index,
        )
        for index, (chunk_id, (doc_chunk, text, ctx)) in enumerate(zip(ids, pieces))
    ]


def chunk_documents(
    documents: Iterable[tuple[Any, str, str]], settings: ChunkSettings | None = None, *, progress: bool = False
) -> list[Chunk]:
    """Chunk ``(document, source, doc_id)`` triples with one chunker; a progress bar over documents."""
    from tqdm.auto import tqdm

    chunker = make_chunker(settings)
    chunks: list[Chunk] = []
    documents = list(documents)
    for document, source, doc_id in tqdm(documents, desc="chunk", unit="doc", disable=not progress):
        found = chunk_document(document, source, doc_id, chunker)
        log.info("event=document_chunked source=%s chunks=%d", source, len(found))
        chunks.extend(found)
    return chunks
