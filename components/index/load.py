"""Load documents with docling: PDF, Markdown, HTML and DOCX, from files, folders, or a list of both.

PDFs go through docling's native PDF pipeline by default (text cells from docling-parse, no model download). That
pipeline reports no headings, so :func:`recover_pdf_headings` restores them from the PDF's outline (bookmarks) or,
when a PDF has none, from the height of its text lines. With ``layout_models`` pointing at downloaded docling layout
weights the standard layout pipeline runs instead and finds headings, tables and reading order itself.

A file that is missing, unsupported or fails to convert is reported by name and skipped; :func:`load_documents`
raises :class:`NothingReadableError` only when no document at all could be read.
"""

from __future__ import annotations

import hashlib
import logging
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field

from components.index.store import document_id

log = logging.getLogger(__name__)

#: file suffix -> docling input format name
SUPPORTED_SUFFIXES: dict[str, str] = {
    ".pdf": "pdf",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".docx": "docx",
}


class LoadError(ValueError):
    """The sources cannot be read as given (e.g. two different files would get the same document name)."""


class NothingReadableError(LoadError):
    """None of the given sources could be converted."""


class LoadSettings(BaseModel):
    """How documents are converted."""

    model_config = ConfigDict(extra="forbid")

    layout_models: str | None = Field(
        default=None,
        description="Folder with docling layout model weights; when set, PDFs use the standard layout pipeline "
        "instead of the native (model-free) one.",
    )
    parser_threads: int = Field(default=1, ge=1, le=64, description="docling-parse threads for the native PDF pipeline.")
    document_timeout_s: float = Field(
        default=600.0, gt=0, le=86400, description="Give up on one document after this many seconds."
    )
    recover_headings: bool = Field(
        default=True, description="Restore PDF headings from the outline or line heights (native pipeline only)."
    )


@dataclass
class SourceFile:
    """A file to convert and the name it is indexed under."""

    path: Path
    source: str


@dataclass
class Skipped:
    """A source that was not indexed, and why."""

    source: str
    reason: str


@dataclass
class LoadedDocument:
    """A converted document."""

    source: str
    doc_id: str
    path: str
    sha256: str
    pages: int
    document: Any  # docling_core DoclingDocument

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "document"}


@dataclass
class LoadReport:
    """What :func:`load_documents` read and skipped."""

    documents: list[LoadedDocument] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def discover(sources: Iterable[str | Path]) -> tuple[list[SourceFile], list[Skipped]]:
    """Expand files and folders into the files to convert, and the ones skipped with a reason.

    A document is named ``<folder>/<path inside it>``: ``docs/a.pdf`` for both ``--source docs`` and
    ``--source docs/a.pdf``, so indexing a folder or one of its files updates the same document.
    """
    found: dict[Path, SourceFile] = {}
    skipped: list[Skipped] = []
    for raw in sources:
        path = Path(raw).expanduser()
        if path.is_dir():
            root = path.resolve()
            files = sorted(p for p in root.rglob("*") if p.is_file())
            for file in files:
                rel = file.relative_to(root)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                name = f"{root.name}/{rel.as_posix()}"
                if file.suffix.lower() not in SUPPORTED_SUFFIXES:
                    skipped.append(Skipped(name, f"unsupported format {file.suffix or '(no suffix)'}"))
                    continue
                found.setdefault(file, SourceFile(file, name))
        elif path.is_file():
            file = path.resolve()
            name = f"{file.parent.name}/{file.name}"
            if file.suffix.lower() not in SUPPORTED_SUFFIXES:
                skipped.append(Skipped(str(raw), f"unsupported format {file.suffix or '(no suffix)'}"))
                continue
            found.setdefault(file, SourceFile(file, name))
        else:
            skipped.append(Skipped(str(raw), "no such file or folder"))
    by_name: dict[str, Path] = {}
    for item in found.values():
        other = by_name.setdefault(item.source, item.path)
        if other != item.path:
            raise LoadError(f"{other} and {item.path} would both be indexed as {item.source!r}; index them separately")
    return list(found.values()), skipped


def check_layout_models(artifacts: Path) -> bool:
    """Raise :class:`LoadError` unless docling's standard PDF pipeline can start with the weights in ``artifacts``;
    return whether TableFormer's weights are there too (tables on). See :mod:`components.index.standard_pdf`."""
    from components.index.standard_pdf import LayoutModelsError
    from components.index.standard_pdf import check_layout_models as check

    try:
        return check(artifacts)
    except LayoutModelsError as exc:
        raise LoadError(f"layout_models {exc}") from None


def build_converter(settings: LoadSettings):
    """A docling ``DocumentConverter`` for every supported format, offline."""
    from docling.datamodel.base_models import InputFormat
    from docling.document_converter import DocumentConverter, NativePdfFormatOption, PdfFormatOption

    formats = [InputFormat.PDF, InputFormat.MD, InputFormat.HTML, InputFormat.DOCX]
    if settings.layout_models:
        from components.index.standard_pdf import standard_pdf_options

        artifacts = Path(settings.layout_models).expanduser()
        tables = check_layout_models(artifacts)
        options = standard_pdf_options(artifacts, tables=tables, document_timeout_s=settings.document_timeout_s)
        pdf_option = PdfFormatOption(pipeline_options=options)
    else:
        from docling.datamodel.pipeline_options import NativePdfPipelineOptions

        options = NativePdfPipelineOptions(
            parser_threads=settings.parser_threads, document_timeout=settings.document_timeout_s
        )
        pdf_option = NativePdfFormatOption(pipeline_options=options)
    return DocumentConverter(allowed_formats=formats, format_options={InputFormat.PDF: pdf_option})


# -- headings for the native PDF pipeline ---------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")
_PAGE_NUMBER = re.compile(r"^\s*(page\s*)?\d{1,4}(\s*(/|of)\s*\d{1,4})?\s*$", re.I)


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


def pdf_outline(path: Path) -> dict[tuple[int, str], int]:
    """``{(page_no, normalized title): level}`` from the PDF's outline (1-based pages and levels); empty if none."""
    import pypdfium2 as pdfium

    outline: dict[tuple[int, str], int] = {}
    pdf = pdfium.PdfDocument(str(path))
    try:
        for bookmark in pdf.get_toc():
            dest = bookmark.get_dest()
            title = bookmark.get_title()
            if dest is None or not title:
                continue
            outline[(dest.get_index() + 1, _norm(title))] = bookmark.level + 1
    finally:
        pdf.close()
    return outline


def _line_height(item) -> float:
    box = item.prov[0].bbox
    return abs(box.t - box.b)


def _size_levels(items: list) -> dict[int, int]:
    """Heading levels by line height: lines clearly taller than body text are headings, tallest = level 1."""
    heights = [round(_line_height(i), 1) for i in items if i.prov and len(i.text) > 40]
    if len(heights) < 5:
        return {}
    body = statistics.median(heights)
    levels: dict[int, int] = {}
    tall = sorted({round(_line_height(i), 1) for i in items if i.prov and _line_height(i) >= 1.25 * body}, reverse=True)
    rank = {h: n + 1 for n, h in enumerate(tall[:6])}
    for idx, item in enumerate(items):
        if item.prov and len(item.text) <= 120:
            level = rank.get(round(_line_height(item), 1))
            if level:
                levels[idx] = level
    return levels


def recover_pdf_headings(document, path: Path):
    """Rebuild a native-pipeline DoclingDocument with section headers and page furniture marked.

    Headings come from the PDF outline when it has one (a title on the page its bookmark points to), otherwise from
    line heights. Lone page numbers in the top or bottom margin become page furniture, which chunkers skip.
    """
    from docling_core.types.doc import ContentLayer, DocItemLabel, DoclingDocument, TextItem

    items = [item for item, _ in document.iterate_items() if isinstance(item, TextItem)]
    outline = pdf_outline(path)
    by_size = {} if outline else _size_levels(items)
    rebuilt = DoclingDocument(name=document.name, origin=document.origin)
    rebuilt.pages = document.pages
    headings = 0
    for idx, item in enumerate(items):
        prov = item.prov[0] if item.prov else None
        level = None
        if prov is not None and outline:
            level = outline.get((prov.page_no, _norm(item.text)))
        elif idx in by_size:
            level = by_size[idx]
        if level is not None:
            rebuilt.add_heading(text=item.text, level=min(level, 6), prov=prov)
            headings += 1
            continue
        if prov is not None and _PAGE_NUMBER.match(item.text):
            page = document.pages.get(prov.page_no)
            height = page.size.height if page is not None else 0
            box = prov.bbox.to_top_left_origin(height) if height else None
            if box is not None and (box.t < 0.08 * height or box.b > 0.92 * height):
                rebuilt.add_text(
                    label=DocItemLabel.PAGE_FOOTER, text=item.text, prov=prov, content_layer=ContentLayer.FURNITURE
                )
                continue
        rebuilt.add_text(label=DocItemLabel.TEXT, text=item.text, prov=prov)
    log.info("event=pdf_headings source=%s headings=%d from=%s", path.name, headings, "outline" if outline else "size")
    return rebuilt


# -- loading ----------------------------------------------------------------------------------------------------------


def load_documents(
    sources: Iterable[str | Path], settings: LoadSettings | None = None, *, progress: bool = False
) -> LoadReport:
    """Convert every readable document in ``sources``; report the rest as skipped.

    Raises :class:`NothingReadableError` naming every skipped source when no document could be read.
    """
    from docling.datamodel.base_models import ConversionStatus
    from tqdm.auto import tqdm

    settings = settings or LoadSettings()
    sources = list(sources)
    files, skipped = discover(sources)
    report = LoadReport(skipped=list(skipped))
    if files:
        converter = build_converter(settings)
        for item in tqdm(files, desc="load", unit="doc", disable=not progress):
            try:
                result = converter.convert(item.path, raises_on_error=False)
            except Exception as exc:  # noqa: BLE001 - docling raises many types for unreadable input
                report.skipped.append(Skipped(item.source, f"cannot convert: {type(exc).__name__}: {exc}"))
                log.warning("event=load_skipped source=%s reason=%s", item.source, type(exc).__name__)
                continue
            if result.status not in (ConversionStatus.SUCCESS, ConversionStatus.PARTIAL_SUCCESS):
                errors = "; ".join(e.error_message for e in result.errors) or result.status.value
                report.skipped.append(Skipped(item.source, f"cannot convert: {errors}"))
                log.warning("event=load_skipped source=%s status=%s", item.source, result.status.value)
                continue
            document = result.document
            if (
                item.path.suffix.lower() == ".pdf"
                and not settings.layout_models
                and settings.recover_headings
            ):
                document = recover_pdf_headings(document, item.path)
            if not any(True for _ in document.iterate_items()):
                report.skipped.append(Skipped(item.source, "no text found"))
                continue
            report.documents.append(
                LoadedDocument(
                    source=item.source,
                    doc_id=document_id(item.source),
                    path=str(item.path),
                    sha256=_file_sha256(item.path),
                    pages=len(document.pages),
                    document=document,
                )
            )
            log.info("event=document_loaded source=%s pages=%d", item.source, len(document.pages))
    for skip in report.skipped:
        log.warning("event=source_skipped source=%s reason=%s", skip.source, skip.reason)
    if not report.documents:
        detail = "; ".join(f"{s.source}: {s.reason}" for s in report.skipped) or "no sources given"
        raise NothingReadableError(f"nothing readable in {', '.join(map(str, sources)) or '[]'} ({detail})")
    return report
