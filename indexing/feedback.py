"""Relevance feedback: graded (query, document) judgments an application records against a collection.

Calibration is fitted from labelled pairs, and most teams have none to start with; what they have
is their own application's signal (a user marked an answer useful, an annotator graded a page of
hits). `POST /v1/collections/{name}/feedback` records it here, and `rrs calibrate --feedback`
fits the collection's calibration from it exactly as from a BEIR folder's qrels.

One SQLite file per collection (`feedback.sqlite3` beside the document store, removed with the
collection), WAL with `synchronous=FULL`: a judgment is committed before it is acknowledged. A
query is keyed by `query_id`; a later judgment of the same (query, document) replaces the earlier.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from indexing.store import connect_durable

FEEDBACK_FILE = "feedback.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    query_id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    query_id TEXT NOT NULL REFERENCES queries(query_id),
    doc_id TEXT NOT NULL,
    grade INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (query_id, doc_id)
);
"""


def default_query_id(text: str) -> str:
    """A query's id from its text (case and surrounding space ignored), so repeated feedback adds up."""
    return "q-" + hashlib.blake2b(" ".join(text.lower().split()).encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True)
class FeedbackSummary:
    queries: int
    judgments: int
    relevant: int  # judgments at or above the grade asked for


class FeedbackLog:
    """Durable judgments of one collection; thread-safe through one lock around the connection."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = connect_durable(self.path, _SCHEMA)

    def record(self, query_id: str, text: str, judgments: Sequence[tuple[str, int]]) -> None:
        """Store one query's judgments (doc id, grade) in one transaction; the query text is updated too."""
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(
                    "INSERT INTO queries(query_id, text, updated_at) VALUES (?,?,?) "
                    "ON CONFLICT(query_id) DO UPDATE SET text=excluded.text, updated_at=excluded.updated_at",
                    (query_id, text, now),
                )
                self._conn.executemany(
                    "INSERT INTO judgments(query_id, doc_id, grade, updated_at) VALUES (?,?,?,?) "
                    "ON CONFLICT(query_id, doc_id) DO UPDATE SET grade=excluded.grade, "
                    "updated_at=excluded.updated_at",
                    [(query_id, doc, int(grade), now) for doc, grade in judgments],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def summary(self, min_grade: int = 2) -> FeedbackSummary:
        with self._lock:
            queries = self._conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
            judged, relevant = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(grade >= ?), 0) FROM judgments", (min_grade,)
            ).fetchone()
        return FeedbackSummary(int(queries), int(judged), int(relevant))

    def labels(self) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
        """(query id -> text, query id -> doc id -> grade): the shape of a BEIR folder's queries and qrels.

        Queries come in the order they were first recorded (cross-validation folds follow that order).
        """
        with self._lock:
            texts = dict(self._conn.execute("SELECT query_id, text FROM queries ORDER BY rowid").fetchall())
            rows = self._conn.execute("SELECT query_id, doc_id, grade FROM judgments ORDER BY query_id, doc_id")
            qrels: dict[str, dict[str, int]] = {}
            for qid, doc, grade in rows.fetchall():
                qrels.setdefault(qid, {})[doc] = int(grade)
        return {q: t for q, t in texts.items() if q in qrels}, qrels

    def clear(self) -> int:
        """Forget every judgment; returns how many there were."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                n = self._conn.execute("SELECT COUNT(*) FROM judgments").fetchone()[0]
                self._conn.execute("DELETE FROM judgments")
                self._conn.execute("DELETE FROM queries")
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
