"""Retrieval quality on a question set: which document (and page) should answer each question, and recall@k.

The set is YAML (see ``tests/data/qa_sample_corpus.yaml``)::

    questions:
      - question: How do I add context to a caught exception?
        source: sample_corpus/python_tutorial_modules_errors.pdf
        pages: [16]          # optional; without it any chunk of the source counts
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class QAItem:
    """One question and where its answer is."""

    question: str
    source: str
    pages: list[int] = field(default_factory=list)

    def answered_by(self, hit: Any) -> bool:
        """True if ``hit`` (a :class:`components.index.search.Hit`) comes from the expected source and page."""
        if hit.source != self.source:
            return False
        return not self.pages or bool(set(self.pages) & set(hit.pages))


@dataclass
class QAResult:
    """recall@k and the questions that missed."""

    k: int
    recall: float
    misses: list[str]


def load_qa(path: str | Path) -> list[QAItem]:
    """Read a QA set; raises ``ValueError`` naming the file and entry when one is malformed."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    items = []
    for n, entry in enumerate(data.get("questions") or []):
        if not isinstance(entry, dict) or not entry.get("question") or not entry.get("source"):
            raise ValueError(f"{path}: questions[{n}] needs 'question' and 'source'")
        items.append(QAItem(str(entry["question"]), str(entry["source"]), [int(p) for p in entry.get("pages") or []]))
    if not items:
        raise ValueError(f"{path} holds no questions")
    return items


def recall_at_k(index: Any, embedder: Any, items: list[QAItem], k: int = 5) -> QAResult:
    """Fraction of questions with at least one answering chunk among the top ``k`` hits."""
    vectors = embedder.encode([item.question for item in items])
    results = index.search(vectors, k)
    misses = [item.question for item, hits in zip(items, results) if not any(item.answered_by(h) for h in hits)]
    return QAResult(k=k, recall=1 - len(misses) / len(items), misses=misses)
