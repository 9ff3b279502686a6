"""The SQLite document store: ids, durable upserts/deletes, sequence numbers, metadata filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.errors import InvalidDocument
from indexing.store import Document, DocumentStore, vector_id


@pytest.fixture
def store(tmp_path: Path) -> DocumentStore:
    s = DocumentStore(tmp_path / "store.sqlite3", dim=4)
    yield s
    s.close()


def _vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


def test_vector_ids_are_stable_distinct_non_negative_int64():
    ids = [f"doc-{i}" for i in range(10_000)]
    vids = [vector_id(i) for i in ids]
    assert vids == [vector_id(i) for i in ids]  # same string, same id, every time
    assert len(set(vids)) == len(ids)
    assert all(0 <= v < 2**63 for v in vids)
    assert vector_id("doc-1") == 4752762565065110614  # fixed across processes and versions: on-disk format


def test_upsert_replaces_and_bumps_sequence(store: DocumentStore):
    first = store.upsert([Document("a", "first", {"k": 1}), Document("b", "bee", {})], _vecs(2))
    assert first.seq == 1 and first.vids == [vector_id("a"), vector_id("b")]
    assert store.upsert([Document("a", "second", {"k": 2})], _vecs(1, seed=1)).seq == 2
    assert store.count() == 2
    doc = store.get_by_ids(["a"])[0]
    assert (doc.text, doc.metadata) == ("second", {"k": 2})
    found, vectors = store.vectors_for([vector_id("a")])
    np.testing.assert_array_equal(vectors[0], _vecs(1, seed=1)[0])
    # only the replaced document is newer than seq 1: what recovery replays after a seq-1 snapshot
    replay = list(store.iter_vectors(since_seq=1))
    assert [v.tolist() for v, _ in replay] == [[vector_id("a")]]


def test_delete_removes_and_records_tombstones(store: DocumentStore):
    store.upsert([Document(i, i) for i in "abc"], _vecs(3))
    write = store.delete(["a", "zzz"])
    removed, seq = write.remove_vids, write.seq
    assert removed == [vector_id("a")] and write.documents == 1 and store.count() == 2
    assert store.tombstones_since(seq - 1).tolist() == [vector_id("a")]
    store.prune_tombstones(seq)
    assert store.tombstones_since(0).size == 0
    assert store.existing_ids(["a", "b", "c"]) == {"b", "c"}


def test_writes_survive_reopening(tmp_path: Path):
    path = tmp_path / "s.sqlite3"
    s = DocumentStore(path, dim=4)
    s.upsert([Document("x", "text", {"lang": "en"})], _vecs(1))
    s.close()
    again = DocumentStore(path, dim=4)
    assert again.count() == 1 and again.last_seq == 1
    assert again.get_by_ids(["x"])[0].metadata == {"lang": "en"}
    assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again.close()


def test_metadata_equality_filter(store: DocumentStore):
    docs = [
        Document("1", "t", {"lang": "en", "year": 2020, "draft": False, "meta": {"src": "web"}}),
        Document("2", "t", {"lang": "de", "year": 2020, "draft": True}),
        Document("3", "t", {"lang": "en", "year": 2021, "score": 0.5, "note": None}),
    ]
    store.upsert(docs, _vecs(3))

    def ids(f: dict) -> set[str]:
        return {d.id for d in store.get_by_vids(store.vids_matching(f)[0].tolist()).values()}

    assert ids({"lang": "en"}) == {"1", "3"}
    assert ids({"lang": "en", "year": 2020}) == {"1"}
    assert ids({"draft": True}) == {"2"}
    assert ids({"draft": False}) == {"1"}  # not confused with 0 or a missing field
    assert ids({"meta.src": "web"}) == {"1"}
    assert ids({"score": 0.5}) == {"3"}
    assert ids({"note": None}) == {"3"}
    assert ids({"lang": "fr"}) == set()
    with pytest.raises(InvalidDocument, match="filter"):
        store.vids_matching({"bad key'); DROP TABLE documents; --": 1})
    with pytest.raises(InvalidDocument, match="filter"):
        store.vids_matching({"lang": ["en"]})


def test_rejects_wrong_dimension(store: DocumentStore):
    with pytest.raises(InvalidDocument, match="dimension 4"):
        store.upsert([Document("a", "t")], np.zeros((1, 3), np.float32))


def test_a_store_from_before_embedding_reuse_opens_and_gains_the_columns(tmp_path: Path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE documents (vid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL, "
        "metadata TEXT NOT NULL, vector BLOB NOT NULL, seq INTEGER NOT NULL);"
    )
    conn.execute("INSERT INTO documents VALUES (?, 'old', 'old text', '{}', ?, 1)",
                 (vector_id("old"), _vecs(1)[0].tobytes()))
    conn.commit()
    conn.close()
    store = DocumentStore(path, dim=4)
    assert store.get_by_ids(["old"])[0].text == "old text"
    assert store.reusable({"old": "any key"}) == {}  # its vector's origin is unknown: never reused
    store.upsert([Document("new", "new text", embedding_key="k1")], _vecs(1, seed=3))
    reused = store.reusable({"new": "k1", "old": "k1"})
    assert list(reused) == ["new"] and np.allclose(reused["new"].vector, _vecs(1, seed=3)[0])
    assert store.reusable({"new": "k2"}) == {}  # another text, model or chunking: another key
    store.close()
    DocumentStore(path, dim=4).close()  # reopening finds the columns in place
