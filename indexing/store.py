"""SQLite document store: the source of truth for a collection (ids, text, metadata and vectors).

Vectors are kept in the store (float32 BLOBs) so that a lost or stale index snapshot is rebuilt
without re-embedding. Every write is a transaction committed with `synchronous=FULL` in WAL mode
before the caller acknowledges it, and carries a sequence number: an index snapshot records the
sequence it covers, and recovery replays only the writes after it.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import InvalidDocument
from indexing.facets import FacetValue, facet_queries, merge_counts, typed_values
from indexing.filters import (
    ARRAY_INDEX,
    RowWise,
    array_backfill,
    array_holders_sql,
    array_triggers,
    check_field,
    check_index,
    filter_sql,
    holders_source,
    index_columns,
    json_path,
    served_by_indexes,
)
from indexing.lexical import LexicalIndex

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
CREATE TABLE IF NOT EXISTS chunks (
    vid INTEGER PRIMARY KEY,
    doc_vid INTEGER NOT NULL,
    part INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    vector BLOB,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_vid);
CREATE INDEX IF NOT EXISTS chunks_seq ON chunks(seq);
CREATE TABLE IF NOT EXISTS array_values (field TEXT NOT NULL, type TEXT NOT NULL, value, vid INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS array_values_elements ON array_values(field, value, type, vid);
DROP INDEX IF EXISTS array_values_lookup;
CREATE INDEX IF NOT EXISTS array_values_vid ON array_values(vid, field);
"""
FEW_MATCHES = 4096  # a filter matching fewer documents drives a facet's element lookups
_META_INDEX = "meta:"  # a metadata index is named after its field: "meta:lang"
_ARRAY_TRIGGER = "meta[]:"  # an array index is three triggers: "meta[]:tags:insert", ":update", ":delete"


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


def chunk_vector_id(doc_id: str, part: int) -> int:
    """Vector id of chunk `part` (>= 1) of a document; chunk 0 is the document's own vector id.

    The NUL separator cannot occur in a document id (they are validated), so no document id maps here.
    """
    return vector_id(f"{doc_id}\x00{part}")


@dataclass(frozen=True)
class Chunk:
    """One window of a long document: its character span, and its vector (None for chunk 0, whose
    vector is the document's own)."""

    start: int
    end: int
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class ChunkRef:
    """Which chunk of its document a vector is, for a search hit."""

    part: int
    start: int
    end: int


@dataclass
class Write:
    """What one store write changed, for the index: vectors to add (or replace) and to remove."""

    vids: list[int]  # the documents' vector ids
    seq: int
    add_vids: np.ndarray
    add_vectors: np.ndarray
    remove_vids: list[int] = field(default_factory=list)
    documents: int = 0  # documents removed (deletes)


@dataclass
class Document:
    """One stored document; `vid` is the vector id the ANN index knows it by.

    `embedding_key` is set when the server embedded `text` itself (see `embedding_key()`), and
    `embedding_cut` when that embedding did not read the whole text: together they let an upsert of
    the same text keep the stored vectors instead of embedding it again.
    """

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    vid: int = -1
    embedding_key: str | None = None
    embedding_cut: bool = False


@dataclass(frozen=True)
class StoredEmbedding:
    """A document's stored vectors, reusable for the same text: its vector, its chunks, whether cut."""

    vector: np.ndarray
    chunks: list[Chunk]
    cut: bool


def embedding_key(model: str, dim: int, chunk_tokens: int | None, chunk_overlap: int, max_chunks: int,
                  text: str) -> str:
    """What a server-made embedding of `text` depends on, hashed: the same key, the same vectors.

    The model name is the collection's embedding space (TempScale included), fixed at creation.
    """
    spec = f"{model}\x00{dim}\x00{chunk_tokens}\x00{chunk_overlap}\x00{max_chunks}\x00"
    return hashlib.blake2b((spec + text).encode("utf-8"), digest_size=16).hexdigest()


class DocumentStore:
    """One SQLite file per collection; thread-safe through one lock around the connection."""

    def __init__(self, path: Path, dim: int | None = None, lexical_stemmer: str = "none") -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = connect_durable(self.path, _SCHEMA)
        self._add_columns(("embedding_key TEXT", "embedding_cut INTEGER NOT NULL DEFAULT 0"))
        self.dim = dim
        self.lexical = LexicalIndex(self._conn, self._lock, lexical_stemmer)

    def _add_columns(self, columns: Sequence[str]) -> None:
        """Columns a store written by an older rrs lacks (another process may be adding them too)."""
        have = {r[1] for r in self._conn.execute("PRAGMA table_info(documents)")}
        for column in columns:
            if column.split()[0] in have:
                continue
            try:
                self._conn.execute(f"ALTER TABLE documents ADD COLUMN {column}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise

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
    def upsert(
        self, docs: Sequence[Document], vectors: np.ndarray, chunks: Sequence[Sequence[Chunk]] | None = None
    ) -> Write:
        """Insert or replace `docs` with their vectors (and chunks) in one durable transaction.

        `vectors[i]` is document i's vector (its chunk 0 when chunked); `chunks[i]`, when it has more
        than one entry, lists every chunk of document i, chunk 0 first. A replaced document's old
        chunks are dropped; those the new version lacks are returned for removal from the index.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(docs) != len(vectors):
            raise InvalidDocument(f"documents: {len(docs)} documents but {len(vectors)} vectors")
        if self.dim is not None and vectors.ndim == 2 and vectors.shape[1] != self.dim:
            raise InvalidDocument(f"vector: expected dimension {self.dim}, got {vectors.shape[1]}")
        chunks = chunks if chunks is not None else [()] * len(docs)
        if len(chunks) != len(docs):
            raise InvalidDocument(f"documents: {len(docs)} documents but {len(chunks)} chunk lists")
        for i, d in enumerate(docs):
            if "\x00" in d.id:
                raise InvalidDocument(f"documents[{i}].id: must not contain the NUL character")
        vids = [vector_id(d.id) for d in docs]
        chunk_rows: list[tuple[int, int, int, int, int, bytes | None]] = []
        add_vids: list[int] = list(vids)
        add_vectors: list[np.ndarray] = [vectors]
        for d, vid, parts in zip(docs, vids, chunks, strict=True):
            if len(parts) <= 1:
                continue
            extra = []
            for part, c in enumerate(parts):
                if part == 0:
                    chunk_rows.append((vid, vid, 0, c.start, c.end, None))
                    continue
                if c.vector is None:
                    raise InvalidDocument(f"documents: chunk {part} of {d.id!r} has no vector")
                vec = np.ascontiguousarray(c.vector, dtype=np.float32).reshape(-1)
                cvid = chunk_vector_id(d.id, part)
                chunk_rows.append((cvid, vid, part, c.start, c.end, vec.tobytes()))
                add_vids.append(cvid)
                extra.append(vec)
            add_vectors.append(np.stack(extra))
        with self._lock:
            seq = self.last_seq + 1
            rows = [
                (vid, d.id, d.text, _metadata_json(d.metadata, i), vec.tobytes(), seq,
                 d.embedding_key, int(d.embedding_cut))
                for i, (vid, d, vec) in enumerate(zip(vids, docs, vectors, strict=True))
            ]
            try:
                with self._transaction():
                    old = self._chunk_vids_of(vids)
                    for chunk in _chunks(vids, 500):
                        self._conn.execute(f"DELETE FROM chunks WHERE doc_vid IN ({','.join('?' * len(chunk))})", chunk)
                    self._conn.executemany(
                        "INSERT INTO documents(vid, id, text, metadata, vector, seq, embedding_key, embedding_cut) "
                        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(vid) DO UPDATE SET id=excluded.id, text=excluded.text, "
                        "metadata=excluded.metadata, vector=excluded.vector, seq=excluded.seq, "
                        "embedding_key=excluded.embedding_key, embedding_cut=excluded.embedding_cut",
                        rows,
                    )
                    self._conn.executemany(
                        "INSERT INTO chunks(vid, doc_vid, part, start, end, vector, seq) VALUES (?,?,?,?,?,?,?)",
                        [(*row, seq) for row in chunk_rows],
                    )
                    gone = sorted(set(old) - set(add_vids))
                    self._conn.executemany("INSERT INTO tombstones(vid, seq) VALUES (?, ?)", [(v, seq) for v in gone])
                    self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
            except sqlite3.IntegrityError as exc:  # two ids hashing to one vid: astronomically rare
                raise InvalidDocument(f"documents: id collides with a stored id ({exc})") from exc
        for d, vid in zip(docs, vids, strict=True):
            d.vid = vid
        stacked = np.concatenate(add_vectors) if len(add_vectors) > 1 else vectors
        return Write(vids, seq, np.asarray(add_vids, dtype=np.int64), stacked, gone)

    def _chunk_vids_of(self, doc_vids: Sequence[int]) -> list[int]:
        """Vector ids of the extra chunks (part >= 1) stored for these documents, in one list."""
        return [vid for extra in self.chunk_vids(doc_vids).values() for vid in extra]

    def delete(self, ids: Sequence[str]) -> Write:
        """Delete documents by id (unknown ids are ignored) with their chunks, in one transaction."""
        with self._lock:
            seq = self.last_seq + 1
            with self._transaction():
                removed: list[int] = []
                for chunk in _chunks(list(ids), 500):
                    marks = ",".join("?" * len(chunk))
                    removed += [
                        r[0]
                        for r in self._conn.execute(f"SELECT vid FROM documents WHERE id IN ({marks})", chunk)
                    ]
                    self._conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", chunk)
                extra = self._chunk_vids_of(removed)
                for chunk in _chunks(removed, 500):
                    self._conn.execute(f"DELETE FROM chunks WHERE doc_vid IN ({','.join('?' * len(chunk))})", chunk)
                self._conn.executemany(
                    "INSERT INTO tombstones(vid, seq) VALUES (?, ?)", [(v, seq) for v in removed + extra]
                )
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('seq', ?)", (str(seq),))
        empty = np.zeros((0, self.dim or 0), dtype=np.float32)
        return Write(removed, seq, np.zeros(0, dtype=np.int64), empty, removed + extra, len(removed))

    def update_metadata(self, updates: Sequence[tuple[str, dict[str, Any]]], merge: bool = False) -> list[str]:
        """Set (or, with `merge`, shallow-merge: a null value removes the key) the metadata of stored
        documents, in one durable transaction; returns the ids that exist (the others are untouched).

        Text and vectors do not change, so neither the ANN index nor the lexical index is touched.
        """
        with self._lock:
            with self._transaction():
                updated: list[str] = []
                for position, (doc_id, metadata) in enumerate(updates):
                    row = self._conn.execute("SELECT metadata FROM documents WHERE id = ?", (doc_id,)).fetchone()
                    if row is None:
                        continue
                    new = metadata
                    if merge:
                        new = {**json.loads(row[0]), **metadata}
                        new = {k: v for k, v in new.items() if v is not None}
                    self._conn.execute(
                        "UPDATE documents SET metadata = ? WHERE id = ?", (_metadata_json(new, position), doc_id)
                    )
                    updated.append(doc_id)
        return updated

    def delete_matching(self, filter_: dict[str, Any]) -> Write:
        """Delete every document the filter matches (with its chunks); the match and the delete are one
        step under the store's lock, so a document written meanwhile is either matched or untouched."""
        where, params = self._filter(filter_)
        with self._lock:
            ids = [r[0] for r in self._conn.execute(f"SELECT id FROM documents WHERE {where}", params)]
            return self.delete(ids)

    def prune_tombstones(self, up_to_seq: int) -> None:
        """Forget deletions already reflected in a durable index snapshot."""
        with self._lock:
            self._conn.execute("DELETE FROM tombstones WHERE seq <= ?", (up_to_seq,))

    # ---- reads ----
    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def chunk_count(self) -> int:
        """Vectors beyond one per document: the extra chunks of long documents."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM chunks WHERE part > 0").fetchone()[0])

    def vector_count(self) -> int:
        """Vectors the index must hold: one per document plus the extra chunks."""
        return self.count() + self.chunk_count()

    def chunk_refs(self, vids: Sequence[int]) -> dict[int, tuple[int, ChunkRef]]:
        """For vector ids of chunked documents: (the document's vector id, which chunk).

        Vector ids of unchunked documents are absent (they are their document, whole).
        """
        out: dict[int, tuple[int, ChunkRef]] = {}
        with self._lock:
            for chunk in _chunks([int(v) for v in vids], 500):
                marks = ",".join("?" * len(chunk))
                for vid, doc_vid, part, start, end in self._conn.execute(
                    f"SELECT vid, doc_vid, part, start, end FROM chunks WHERE vid IN ({marks})", chunk
                ):
                    out[vid] = (doc_vid, ChunkRef(part, start, end))
        return out

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

    def stored_state(self, ids: Sequence[str]) -> dict[str, tuple[str | None, str, dict[str, Any]]]:
        """For the stored ones of `ids`: (embedding key, text, metadata), what a sync compares against."""
        out: dict[str, tuple[str | None, str, dict[str, Any]]] = {}
        with self._lock:
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                for doc_id, key, text, meta in self._conn.execute(
                    f"SELECT id, embedding_key, text, metadata FROM documents WHERE id IN ({marks})", chunk
                ):
                    out[doc_id] = (key, text, json.loads(meta))
        return out

    def reusable(self, keys: dict[str, str]) -> dict[str, StoredEmbedding]:
        """For `{id: embedding key}`: the stored embeddings whose key is the same (same text, same model
        and chunking), with their chunks, so an unchanged document is not embedded again."""
        out: dict[str, StoredEmbedding] = {}
        with self._lock:
            items = list(keys.items())
            for chunk in _chunks(items, 500):
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT vid, id, embedding_key, embedding_cut, vector FROM documents WHERE id IN ({marks})",
                    [doc_id for doc_id, _ in chunk],
                ).fetchall()
                hits = {vid: (doc_id, cut, blob) for vid, doc_id, key, cut, blob in rows if key == keys[doc_id]}
                parts: dict[int, list[Chunk]] = {}
                if hits:
                    vmarks = ",".join("?" * len(hits))
                    for doc_vid, start, end, blob in self._conn.execute(
                        f"SELECT doc_vid, start, end, vector FROM chunks WHERE doc_vid IN ({vmarks}) "
                        "ORDER BY doc_vid, part", list(hits),
                    ):
                        vec = None if blob is None else np.frombuffer(blob, dtype=np.float32).copy()
                        parts.setdefault(doc_vid, []).append(Chunk(start, end, vec))
                for vid, (doc_id, cut, blob) in hits.items():
                    out[doc_id] = StoredEmbedding(
                        np.frombuffer(blob, dtype=np.float32).copy(), parts.get(vid, []), bool(cut)
                    )
        return out

    def ids(self, limit: int, after: str | None = None) -> list[str]:
        """Up to `limit` document ids in order, those greater than `after` (keyset, like `page`)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM documents WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit)
            ).fetchall()
        return [r[0] for r in rows]

    def page(self, limit: int, after: str | None = None, filter_: dict[str, Any] | None = None) -> list[Document]:
        """Up to `limit` documents in id order, those with an id greater than `after`, within the filter.

        Keyset pagination on the id's unique index: a page costs the same at any depth, and writes
        between pages never make a reader skip or repeat a document that was there all along.
        """
        where, params = self._filter(filter_)
        if after is not None:
            where, params = f"({where}) AND id > ?", [*params, after]
        with self._lock:
            rows = self._conn.execute(
                f"SELECT vid, id, text, metadata FROM documents WHERE {where} ORDER BY id LIMIT ?", [*params, limit]
            ).fetchall()
        return [Document(doc_id, text, json.loads(meta), vid) for vid, doc_id, text, meta in rows]

    def chunk_spans(self, doc_vids: Sequence[int]) -> dict[int, list[ChunkRef]]:
        """Each chunked document's chunks in order, chunk 0 first (unchunked documents are absent)."""
        out: dict[int, list[ChunkRef]] = {}
        with self._lock:
            for chunk in _chunks([int(v) for v in doc_vids], 500):
                marks = ",".join("?" * len(chunk))
                for doc_vid, part, start, end in self._conn.execute(
                    f"SELECT doc_vid, part, start, end FROM chunks WHERE doc_vid IN ({marks}) ORDER BY doc_vid, part",
                    chunk,
                ):
                    out.setdefault(doc_vid, []).append(ChunkRef(part, start, end))
        return out

    def vectors_for(self, vids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of `vids` (documents' or chunks') that exist, with their vids."""
        found_vids: list[int] = []
        blobs: list[bytes] = []
        with self._lock:
            for chunk in _chunks([int(v) for v in vids], 500):
                marks = ",".join("?" * len(chunk))
                for table in ("documents", "chunks"):
                    for vid, blob in self._conn.execute(
                        f"SELECT vid, vector FROM {table} WHERE vid IN ({marks}) AND vector IS NOT NULL", chunk
                    ):
                        found_vids.append(vid)
                        blobs.append(blob)
        return np.asarray(found_vids, dtype=np.int64), self._decode(blobs)

    def iter_vectors(self, since_seq: int = 0, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vids, vectors) of every document and chunk written after `since_seq`, in bounded batches."""
        for table in ("documents", "chunks"):
            last_vid = -1
            while True:
                with self._lock:
                    rows = self._conn.execute(
                        f"SELECT vid, vector FROM {table} WHERE seq > ? AND vid > ? AND vector IS NOT NULL "
                        "ORDER BY vid LIMIT ?",
                        (since_seq, last_vid, batch),
                    ).fetchall()
                if not rows:
                    break
                last_vid = rows[-1][0]
                yield np.asarray([r[0] for r in rows], dtype=np.int64), self._decode([r[1] for r in rows])

    def tombstones_since(self, seq: int) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute("SELECT vid FROM tombstones WHERE seq > ?", (seq,)).fetchall()
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def vids_matching(self, filter_: dict[str, Any], limit: int | None = None) -> tuple[np.ndarray, int]:
        """Vector ids (documents' and their chunks') of documents the filter matches, and how many
        documents that is. The filter is evaluated once; chunks are looked up by document.

        With `limit`, at most that many documents are read: a count equal to it means "at least".
        """
        rows, params = self._matching_rows(filter_, limit)
        with self._lock:
            # One text of all ids: 2.4x faster than a row per id when a broad filter matches 160k.
            (joined,) = self._conn.execute(f"SELECT group_concat(vid) FROM ({rows})", params).fetchone()
            docs = _int_list(joined)
            extra = np.zeros(0, dtype=np.int64)
            if len(docs) and self._conn.execute("SELECT 1 FROM chunks WHERE part > 0 LIMIT 1").fetchone():
                (joined,) = self._conn.execute(
                    "SELECT group_concat(vid) FROM chunks "
                    "WHERE part > 0 AND doc_vid IN (SELECT value FROM json_each(?))",
                    (json.dumps(docs.tolist()),),
                ).fetchone()
                extra = _int_list(joined)
        return np.concatenate([docs, extra]), len(docs)

    def count_matching(self, filter_: dict[str, Any], limit: int | None = None) -> int:
        """Documents the filter matches (from the index alone when one serves it); with `limit`,
        counting stops there."""
        rows, params = self._matching_rows(filter_, limit)
        with self._lock:
            return int(self._conn.execute(f"SELECT count(*) FROM ({rows})", params).fetchone()[0])

    def _matching_rows(self, filter_: dict[str, Any], limit: int | None) -> tuple[str, list[Any]]:
        """A query of the vector ids of the documents the filter matches (up to `limit`): from the
        array index alone for a lone indexed `$contains`, else a read of the documents table."""
        cut = "" if limit is None else f" LIMIT {int(limit)}"
        indexed, arrays = self._filter_indexes()
        if (direct := holders_source(filter_, arrays)) is not None:
            return direct[0] + cut, direct[1]
        where, params = self._limited_filter(filter_, limit, indexed, arrays)
        return f"SELECT vid FROM documents WHERE {where}" + cut, params

    def facets(self, field_name: str, filter_: dict[str, Any] | None, limit: int) -> tuple[list[FacetValue], int]:
        """The `limit` most frequent values of a metadata field among the documents the filter matches
        (see facets.py), and how many distinct values there are."""
        where, params = self._filter(filter_)
        indexed = field_name in self._arrays()
        few = indexed and bool(filter_) and self.count_matching(filter_, limit=FEW_MATCHES) < FEW_MATCHES
        values, elements = facet_queries(field_name, where, indexed, few)
        with self._lock:
            rows = self._conn.execute(values, params).fetchall()
            if elements is not None:  # parameters in the order each form names them
                rows += self._conn.execute(elements, [*params, field_name] if few else [field_name, *params]).fetchall()
        return merge_counts(rows, limit)

    def group_keys(self, doc_vids: Sequence[int], field_name: str) -> dict[int, list[tuple[str, Any]]]:
        """Each document's typed values of a metadata field (see grouping.py), read by vector id."""
        path = json_path(check_field(field_name, "group_by"))
        out: dict[int, list[tuple[str, Any]]] = {}
        with self._lock:
            for chunk in _chunks([int(v) for v in doc_vids], 500):
                marks = ",".join("?" * len(chunk))
                for vid, raw, json_type in self._conn.execute(
                    f"SELECT vid, json_extract(metadata, {path}), json_type(metadata, {path}) FROM documents "
                    f"WHERE vid IN ({marks})", chunk
                ):
                    out[vid] = typed_values(raw, json_type)
        return out

    def documents_passing(self, filter_: dict[str, Any], doc_vids: Sequence[int], per_row: bool = True
                          ) -> np.ndarray:
        """Those of `doc_vids` (documents' vector ids) whose document the filter matches.

        The candidates drive the join (CROSS JOIN fixes the order), so a broad filter is checked on
        a search's few hundred candidates instead of being read whole from its index. `per_row` False
        compiles the filter as for finding matches (benchmarks/filtered_search.py compares the two).
        """
        if not len(doc_vids):
            return np.zeros(0, np.int64)
        where, params = self._filter(filter_, per_row=per_row)
        sql = (f"SELECT group_concat(vid) FROM json_each(?) AS candidate CROSS JOIN documents "
               f"ON documents.vid = candidate.value WHERE {where}")
        with self._lock:
            (joined,) = self._conn.execute(sql, [json.dumps([int(v) for v in doc_vids]), *params]).fetchone()
        return _int_list(joined)

    # ---- metadata indexes ----
    def metadata_indexes(self) -> list[str]:
        """Fields with a metadata index (`a`, composite `a+b`, array `tags[]`), sorted; read from the
        schema, so they need no bookkeeping of their own."""
        with self._lock:
            names = self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'documents' AND name LIKE ?",
                (_META_INDEX + "%",),
            ).fetchall()
        return sorted([name[len(_META_INDEX):] for (name,) in names] + [f + ARRAY_INDEX for f in self._arrays()])

    def _arrays(self) -> frozenset[str]:
        """Fields with an array index (their insert trigger names them)."""
        with self._lock:
            names = self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'documents' AND name LIKE ?",
                (_ARRAY_TRIGGER + "%:insert",),
            ).fetchall()
        return frozenset(name[len(_ARRAY_TRIGGER): -len(":insert")] for (name,) in names)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One durable transaction (the caller holds the lock): committed whole, or rolled back."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def reads_from_indexes(self, filter_: dict[str, Any]) -> bool:
        """Whether every condition of the filter reads an index (served_by_indexes): then reading all
        its matches costs about one index entry each, not a scan of every document."""
        return served_by_indexes(filter_, *self._filter_indexes())

    def _filter_indexes(self) -> tuple[frozenset[str], frozenset[str]]:
        """What a filter can read, from one look at the schema: the fields that lead a metadata index
        (`a`, and `a` of a composite `a+b`: equality, ranges, the exclusions of negations), and the
        fields with an array index (`$contains`)."""
        specs = self.metadata_indexes()
        arrays = frozenset(f[: -len(ARRAY_INDEX)] for f in specs if f.endswith(ARRAY_INDEX))
        return frozenset(f.split("+")[0] for f in specs if not f.endswith(ARRAY_INDEX)), arrays

    def _filter(self, filter_: dict[str, Any] | None, per_row: RowWise = False) -> tuple[str, list[Any]]:
        if not filter_:
            return "1", []
        indexed, arrays = self._filter_indexes()
        return filter_sql(filter_, arrays, per_row, indexed)

    def _limited_filter(self, filter_: dict[str, Any], limit: int | None, indexed: frozenset[str],
                        arrays: frozenset[str]) -> tuple[str, list[Any]]:
        """The filter compiled for a read that stops after `limit` matches.

        An indexed `$contains` is either a list of the value's holders, built whole before any row
        is read, or a probe per row of a scan that stops at the limit. Reading `limit` matches of a
        value that `h` of `n` documents hold costs about `h` list entries, or `limit * n / h` probes,
        so the scan wins when `h > sqrt(limit * n)`: the holders are counted up to that bound. Only
        where every other condition reads an index too: one that reads each row's metadata is cheaper
        on the holders alone than on every row a scan passes.

        An indexed negation or `$exists` likewise: the documents it excludes (or, `$exists: true`, the
        ones holding the field) are listed whole from the index only when fewer than `limit` (then
        they cost less than the `limit` rows any scan reads); more, and each row the scan passes is
        tested instead (`lang $ne en` excludes half the collection).
        """
        if limit is None or not filter_:
            return filter_sql(filter_ or {}, arrays, False, indexed)
        bounds: list[int] = []  # count() scans the table: once, and only when a $contains asks

        def common(key: str, value: Any) -> bool:
            if not bounds:
                bounds.append(max(1, math.isqrt(int(limit) * max(self.count(), 1))))
            bound = bounds[0]
            sql, params = array_holders_sql(key, value, bound)
            with self._lock:
                return int(self._conn.execute(sql, params).fetchone()[0]) >= bound

        def few(test: str, params: list[Any]) -> bool:
            count = f"SELECT count(*) FROM (SELECT 1 FROM documents WHERE {test} LIMIT ?)"
            with self._lock:
                return int(self._conn.execute(count, [*params, int(limit)]).fetchone()[0]) < int(limit)

        # (a malformed filter is not served, and compiling it reports what is wrong)
        per_row: RowWise = common if arrays and served_by_indexes(filter_, indexed, arrays) else False
        return filter_sql(filter_, arrays, per_row, indexed, few)

    def create_metadata_index(self, spec: str) -> bool:
        """Index a metadata field for filters; False if it already was. `a` and `a+b` serve equality,
        $in and comparisons; `tags[]` serves `$contains` on an array field.

        Built in one pass under the store's lock: writes and searches of this collection wait for it.
        """
        check_index(spec, "field")
        with self._lock:
            if spec in self.metadata_indexes():
                return False
            if spec.endswith(ARRAY_INDEX):
                field_name = spec[: -len(ARRAY_INDEX)]
                with self._transaction():  # triggers and the rows of the documents stored: all or none
                    for event, body in array_triggers(field_name).items():
                        self._conn.execute(f'CREATE TRIGGER "{_ARRAY_TRIGGER}{field_name}:{event}" {body}')
                    self._conn.execute(array_backfill(field_name))
            else:
                columns = index_columns(spec)
                self._conn.execute(f'CREATE INDEX IF NOT EXISTS "{_META_INDEX}{spec}" ON documents({columns})')
            self.refresh_statistics(force=True)
        return True

    def drop_metadata_index(self, spec: str) -> bool:
        """Remove a metadata index; False if there was none."""
        check_index(spec, "field")
        with self._lock:
            if spec not in self.metadata_indexes():
                return False
            if spec.endswith(ARRAY_INDEX):
                field_name = spec[: -len(ARRAY_INDEX)]
                with self._transaction():
                    for event in ("insert", "update", "delete"):
                        self._conn.execute(f'DROP TRIGGER IF EXISTS "{_ARRAY_TRIGGER}{field_name}:{event}"')
                    self._conn.execute("DELETE FROM array_values WHERE field = ?", (field_name,))
            else:
                self._conn.execute(f'DROP INDEX IF EXISTS "{_META_INDEX}{spec}"')
        return True

    def refresh_statistics(self, force: bool = False) -> bool:
        """Re-sample the metadata indexes' statistics when the table has grown or shrunk 2x since the last
        sample (or `force`). Without them SQLite guesses, and between two indexed equalities it may
        walk the index of a flag half the documents carry instead of a tenant's; with them it picks
        the selective one. Sampled (`analysis_limit`), so it costs about the same at any size."""
        with self._lock:
            fields = self.metadata_indexes()
            if not fields:
                return False
            rows = self.count()
            last = self.get_meta("analyzed_rows")
            if not force and last is not None and int(last) // 2 <= rows <= 2 * int(last) + 100:
                return False
            self._conn.execute("PRAGMA analysis_limit = 2000")
            for name in fields:
                target = "array_values_elements" if name.endswith(ARRAY_INDEX) else f"{_META_INDEX}{name}"
                self._conn.execute(f'ANALYZE "{target}"')
            self.set_meta("analyzed_rows", str(rows))
        return True

    def lexical_search(
        self, text: str, k: int, filter_: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """BM25 top-k (scores, document vector ids) over the documents' text, within the filter."""
        where, params = self._filter(filter_)
        return self.lexical.search(text, k, self.count(), where, params)

    def chunk_vids(self, doc_vids: Sequence[int]) -> dict[int, list[int]]:
        """Each document's extra chunk vector ids (only documents that have chunks appear)."""
        out: dict[int, list[int]] = {}
        with self._lock:
            for chunk in _chunks([int(v) for v in doc_vids], 500):
                marks = ",".join("?" * len(chunk))
                for vid, doc_vid in self._conn.execute(
                    f"SELECT vid, doc_vid FROM chunks WHERE part > 0 AND doc_vid IN ({marks})", chunk
                ):
                    out.setdefault(doc_vid, []).append(vid)
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _decode(self, blobs: list[bytes]) -> np.ndarray:
        if not blobs:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1).copy()


def _metadata_json(metadata: dict[str, Any], position: int) -> str:
    """Metadata as strict JSON: NaN and Infinity would make SQLite's JSON functions (filters) fail."""
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise InvalidDocument(
            f"documents[{position}].metadata: numbers must be finite (NaN and Infinity are not JSON)"
        ) from None


def _int_list(joined: str | None) -> np.ndarray:
    """The integers of a `group_concat` (exact for every int64)."""
    return np.fromstring(joined, dtype=np.int64, sep=",") if joined else np.zeros(0, dtype=np.int64)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
