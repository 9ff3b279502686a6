"""The lexical (BM25) index of a collection: SQLite FTS5 over the document store's own text.

An external-content FTS5 table indexes `documents.text` and triggers keep it in step, so a
document's words are indexed, replaced and deleted in the same transaction as the document itself:
there is no second index to snapshot, replay or lose. Ranking is FTS5's BM25. Tokenization is
`unicode61` with diacritics folded: language-neutral (no stemming, no stopword list). Instead of a
stopword list, query terms found in more than half of the documents are dropped, since BM25 gives
them no weight (IDF <= 0) and they only make every document a match.

A collection may be created with `lexical_stemmer: porter` instead: FTS5's Porter stemmer (English)
on top of the same tokens, so "bridges" matches "bridge". Query words are then stemmed by FTS5 itself
(a temporary FTS5 table on the same connection), so the more-than-half rule counts exactly the
terms the index holds. The tokenizer is part of the FTS5 table's definition, read back on open.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

_TERM = re.compile(r"[^\W_]+")  # what unicode61 keeps as token characters: letters and digits
TOKENIZERS = {"none": "unicode61 remove_diacritics 2", "porter": "porter unicode61 remove_diacritics 2"}
_QUERY_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_fts USING fts5(t, tokenize='{tokenizer}');
CREATE VIRTUAL TABLE IF NOT EXISTS temp.query_tokens USING fts5vocab(temp, query_fts, 'instance');
"""
_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
    text, content='documents', content_rowid='vid', tokenize='{tokenizer}'
);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_terms USING fts5vocab(documents_fts, 'row');
CREATE TRIGGER IF NOT EXISTS documents_fts_insert AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts(rowid, text) VALUES (new.vid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS documents_fts_delete AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', old.vid, old.text);
END;
CREATE TRIGGER IF NOT EXISTS documents_fts_update AFTER UPDATE OF text ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, text) VALUES ('delete', old.vid, old.text);
    INSERT INTO documents_fts(rowid, text) VALUES (new.vid, new.text);
END;
"""


class LexicalUnavailable(RuntimeError):
    """This SQLite was built without FTS5."""


def query_terms(text: str) -> list[str]:
    """The query's distinct terms, folded as the index folds them (case, diacritics), in order."""
    seen: dict[str, None] = {}
    for raw in _TERM.findall(text):
        folded = "".join(c for c in unicodedata.normalize("NFKD", raw.lower()) if not unicodedata.combining(c))
        if folded:
            seen.setdefault(folded, None)
    return list(seen)


class LexicalIndex:
    """FTS5 on the store's connection (and under its lock); created, and filled once, on first open."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock, stemmer: str = "none") -> None:
        """`stemmer` applies when the FTS5 table is created; an existing table keeps its own."""
        if stemmer not in TOKENIZERS:
            raise ValueError(f"lexical_stemmer: one of {', '.join(TOKENIZERS)}, got {stemmer!r}")
        self._conn = conn
        self._lock = lock
        self.error: str | None = None
        self.stemmer = stemmer
        with self._lock:
            try:
                existed = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type='table' AND name='documents_fts'"
                ).fetchone()
                conn.executescript(_SCHEMA.replace("{tokenizer}", TOKENIZERS[stemmer]))
                if not existed:  # a store written before the lexical index existed: index its text once
                    conn.execute("INSERT INTO documents_fts(documents_fts) VALUES ('rebuild')")
                else:
                    self.stemmer = "porter" if "porter" in existed[0] else "none"
                if self.stemmer != "none":
                    conn.executescript(_QUERY_SCHEMA.replace("{tokenizer}", TOKENIZERS[self.stemmer]))
            except sqlite3.OperationalError as exc:
                self.error = f"lexical search needs SQLite with FTS5 ({exc})"

    @property
    def available(self) -> bool:
        return self.error is None

    def search(
        self, text: str, k: int, documents: int, where: str = "1", params: Sequence[Any] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-k (scores, higher is better; document vector ids) among documents matching `where`.

        `where` is an SQL condition on the `documents` row `d` (a metadata filter), `documents` the
        collection's size (for the more-than-half rule).
        """
        if self.error is not None:
            raise LexicalUnavailable(self.error)
        terms = query_terms(text)
        if not terms:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        with self._lock:
            stems = self._stems(terms) if self.stemmer != "none" else {t: [t] for t in terms}
            every = sorted({s for found in stems.values() for s in found})
            if not every:
                return np.zeros(0, np.float32), np.zeros(0, np.int64)
            marks = ",".join("?" * len(every))
            df = dict(self._conn.execute(f"SELECT term, doc FROM documents_terms WHERE term IN ({marks})", every))
            kept = [t for t in terms if all(df.get(s, 0) * 2 <= documents for s in stems[t])] or terms
            match = " OR ".join('"' + t.replace('"', '""') + '"' for t in kept)
            rows = self._conn.execute(
                "SELECT f.rowid, -bm25(documents_fts) FROM documents_fts AS f JOIN documents AS d ON d.vid = f.rowid "
                f"WHERE documents_fts MATCH ? AND ({where}) ORDER BY bm25(documents_fts) LIMIT ?",
                [match, *params, k],
            ).fetchall()
        return np.asarray([r[1] for r in rows], np.float32), np.asarray([r[0] for r in rows], np.int64)

    def _stems(self, words: list[str]) -> dict[str, list[str]]:
        """Each query word's terms as the index's own tokenizer makes them (under the store's lock)."""
        self._conn.execute("DELETE FROM temp.query_fts")
        self._conn.executemany("INSERT INTO temp.query_fts(rowid, t) VALUES (?, ?)",
                               [(i + 1, w) for i, w in enumerate(words)])
        out: dict[str, list[str]] = {w: [] for w in words}
        for term, doc in self._conn.execute("SELECT term, doc FROM temp.query_tokens ORDER BY doc, offset"):
            out[words[doc - 1]].append(term)
        return out
