"""SQLite document store: the source of truth for a collection (ids, text, metadata and vectors).

Vectors are kept in the store (float32 BLOBs) so that a lost or stale index snapshot is rebuilt
without re-embedding. Every write is a transaction committed with `synchronous=FULL` in WAL mode
before the caller acknowledges it, and carries a sequence number: an index snapshot records the
sequence it covers, and recovery replays only the writes after it.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import InvalidDocument

_FILTER_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    vid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_seq ON documents(seq);
CREATE TABLE IF NOT EXISTS tombstones (vid INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_seq ON tombstones(seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def connect_durable(path: Path, schema: str) -> sqlite3.Connection:
    """An autocommit connection in WAL mode with `synchronous=FULL`: a COMMIT is on disk when it returns."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(schema)
    return conn


def vector_id(doc_id: str) -> int:
    """Stable non-negative int64 for a string id (BLAKE2b, 63 bits): same id, same vector id, always."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


@dataclass
class Document:
    """One stored document; `vid` is the vector id the ANN index knows it by."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vid: int = -1


class DocumentStore:
    """One SQLite file per collection; thread-safe through one lock around the connection."""

    def __init__(self, path: Path, dim: int | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = connect_durable(self.path, _SCHEMA)
        self.dim = dim

    # ---- configuration kept next to the data ----
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    @property
    def last_seq(self) -> int:
        value = self.get_meta("seq")
        return int(value) if value is not None else 0

    # ---- writes ----
    def upsert(self, docs: Sequence[Document], vectors: np.ndarray) -> tuple[list[int], int]:
        """Insert or replace `docs` with their vectors in one durable transaction.

        Returns the vector ids and the sequence number of the write.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(docs) != len(vectors):
            raise InvalidDocument(f"documents: {len(docs)} documents but {len(vectors)} vectors")
        if self.dim is not None and vectors.ndim == 2 and vectors.shape[1] != self.dim:
            raise InvalidDocument(f"vector: expected dimension {self.dim}, got {vectors.shape[1]}")
        vids = [vector_id(d.id) for d in docs]
        with self._lock:
            seq = self.last_seq + 1
            rows = [
                (vid, d.id, d.text, json.dumps(d.metadata, ensure_ascii=False), vec.tobytes(), seq)
                for vid, d, vec in zip(vids, docs, vectors, strict=True)
            ]
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO documents(vid, id, text, metadata, vector, seq) VALUES (?,?,?,?,?,?) "
                    "ON CONFLICT(vid) DO UPDATE SET id=excluded.id, text=excluded.text, "
                    "metadata=excluded.metadata, vector=excluded.vector, seq=excluded.seq",
                    rows,
                )
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:  # two ids hashing to one vid: astronomically rare
                self._conn.execute("ROLLBACK")
                raise InvalidDocument(f"documents: id collides with a stored id ({exc})") from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        for d, vid in zip(docs, vids, strict=True):
            d.vid = vid
        return vids, seq

    def delete(self, ids: Sequence[str]) -> tuple[list[int], int]:
        """Delete documents by id (unknown ids are ignored); returns the removed vector ids and the seq."""
        with self._lock:
            seq = self.last_seq + 1
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                removed: list[int] = []
                for chunk in _chunks(list(ids), 500):
                    marks = ",".join("?" * len(chunk))
                    removed += [
                        r[0]
                        for r in self._conn.execute(f"SELECT vid FROM documents WHERE id IN ({marks})", chunk)
                    ]
                    self._conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", chunk)
                self._conn.executemany(
                    "INSERT INTO tombstones(vid, seq) VALUES (?, ?)", [(v, seq) for v in removed]
                )
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return removed, seq

    def prune_tombstones(self, up_to_seq: int) -> None:
        """Forget deletions already reflected in a durable index snapshot."""
        with self._lock:
            self._conn.execute("DELETE FROM tombstones WHERE seq <= ?", (up_to_seq,))

    # ---- reads ----
    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` already stored (the batch job's resume check)."""
        found: set[str] = set()
        with self._lock:
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0] for r in self._conn.execute(f"SELECT id FROM documents WHERE id IN ({marks})", chunk)
                )
        return found

    def get_by_vids(self, vids: Sequence[int]) -> dict[int, Document]:
        out: dict[int, Document] = {}
        with self._lock:
            for chunk in _chunks([int(v) for v in vids], 500):
                marks = ",".join("?" * len(chunk))
                for vid, doc_id, text, meta in self._conn.execute(
                    f"SELECT vid, id, text, metadata FROM documents WHERE vid IN ({marks})", chunk
                ):
                    out[vid] = Document(doc_id, text, json.loads(meta), vid)
        return out

    def get_by_ids(self, ids: Sequence[str]) -> list[Document]:
        docs = self.get_by_vids([vector_id(i) for i in ids])
        return [docs[v] for v in (vector_id(i) for i in ids) if v in docs]

    def vectors_for(self, vids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of `vids` that exist, with their vids (in store order)."""
        found_vids: list[int] = []
        blobs: list[bytes] = []
        with self._lock:
            for chunk in _chunks([int(v) for v in vids], 500):
                marks = ",".join("?" * len(chunk))
                for vid, blob in self._conn.execute(
                    f"SELECT vid, vector FROM documents WHERE vid IN ({marks})", chunk
                ):
                    found_vids.append(vid)
                    blobs.append(blob)
        return np.asarray(found_vids, dtype=np.int64), self._decode(blobs)

    def iter_vectors(self, since_seq: int = 0, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids, vectors) of every document written after `since_seq`, in batches (bounded memory)."""
        last_vid = -1
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT vid, vector FROM documents WHERE seq > ? AND vid > ? ORDER BY vid LIMIT ?",
                    (since_seq, last_vid, batch),
                ).fetchall()
            if not rows:
                return
            last_vid = rows[-1][0]
            yield np.asarray([r[0] for r in rows], dtype=np.int64), self._decode([r[1] for r in rows])

    def tombstones_since(self, seq: int) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute("SELECT vid FROM tombstones WHERE seq > ?", (seq,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def all_vids(self) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute("SELECT vid FROM documents").fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def vids_matching(self, filter_: dict[str, Any]) -> np.ndarray:
        """Vector ids of documents whose metadata equals every `field: value` pair of the filter."""
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in filter_.items():
            if not _FILTER_KEY.match(key):
                raise InvalidDocument(f"filter: invalid field name {key!r}")
            path = "$." + ".".join(f'"{part}"' for part in key.split("."))
            if value is None:
                clauses.append("json_type(metadata, ?) = 'null'")
                params.append(path)
            elif isinstance(value, bool):
                clauses.append("json_type(metadata, ?) = ?")
                params += [path, "true" if value else "false"]
            elif isinstance(value, (str, int, float)):
                clauses.append("json_extract(metadata, ?) = ?")
                params += [path, value]
            else:
                raise InvalidDocument(f"filter: value of {key!r} must be a string, number, boolean or null")
        where = " AND ".join(clauses) if clauses else "1"
        with self._lock:
            rows = self._conn.execute(f"SELECT vid FROM documents WHERE {where}", params).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1).copy()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
