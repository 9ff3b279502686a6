"""Labelled candidate lists from retrieval results and graded qrels (BEIR layout)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexing.calibration.model import LabelledQuery


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """`query-id<TAB>corpus-id<TAB>grade` lines; a header or malformed line is skipped."""
    qrels: dict[str, dict[str, int]] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or not parts[2].strip().lstrip("-").isdigit():
            continue
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def labelled_queries(
    query_ids: Sequence[str],
    query_embeddings: np.ndarray,
    candidate_ids: Sequence[Sequence[str]],
    candidate_scores: Sequence[np.ndarray],
    qrels: dict[str, dict[str, int]],
    min_grade: int = 2,
    keep_empty: bool = False,
) -> list[LabelledQuery]:
    """Queries with at least one relevant judgment; unjudged candidates count as not relevant.

    `keep_empty`: also keep queries with none (all labels 0), for a collection judged in full, where
    a query without a relevant passage is one the filter should answer with an empty list.
    """
    out = []
    for qid, emb, ids, scores in zip(query_ids, query_embeddings, candidate_ids, candidate_scores, strict=True):
        judged = qrels.get(str(qid), {})
        if not keep_empty and not any(g >= min_grade for g in judged.values()):
            continue
        labels = np.array([1.0 if judged.get(str(d), 0) >= min_grade else 0.0 for d in ids])
        out.append(LabelledQuery(str(qid), np.asarray(emb, np.float32), np.asarray(scores, np.float64), labels))
    return out
