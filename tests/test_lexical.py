"""The lexical (FTS5 BM25) index beside the document store, and hybrid fusion on a collection."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from indexing.catalog import CollectionCatalog
from indexing.collection import Collection, CollectionConfig
from indexing.errors import InvalidDocument
from indexing.lexical import query_terms
from indexing.store import Chunk, Document, DocumentStore

DIM = 8
TEXTS = {
    "bees": "Bees pollinate flowers while they collect nectar.",
    "bread": "Bread dough rises because yeast produces carbon dioxide.",
    "jupiter": "Jupiter is the largest planet of the solar system.",
    "cafe": "A café serves coffee; the barista steams the milk.",
    "git": "Git stores history as a graph of commits.",
}


def _store(tmp_path: Path) -> DocumentStore:
    store = DocumentStore(tmp_path / "s.sqlite3", DIM)
    docs = [Document(i, t, {"n": len(t) % 2}) for i, t in TEXTS.items()]
    store.upsert(docs, np.random.default_rng(0).normal(size=(len(docs), DIM)).astype(np.float32))
    return store


def _ids(store: DocumentStore, text: str, **kw) -> list[str]:
    _, vids = store.lexical_search(text, 10, kw or None)
    docs = store.get_by_vids(vids.tolist())
    return [docs[int(v)].id for v in vids]


def test_query_terms_fold_case_and_diacritics_like_the_index():
    assert query_terms("Café, CAFE and naïve_user's 2024!") == ["cafe", "and", "naive", "user", "s", "2024"]


def test_bm25_follows_upserts_replacements_and_deletes(tmp_path: Path):
    store = _store(tmp_path)
    assert _ids(store, "which insects pollinate flowers?") == ["bees"]
    assert _ids(store, "cafe") == ["cafe"]  # diacritics folded on both sides
    store.upsert([Document("bees", "Volcanoes erupt molten lava.", {})], np.ones((1, DIM), np.float32))
    assert _ids(store, "pollinate flowers") == [] and _ids(store, "lava") == ["bees"]
    store.delete(["bees"])
    assert _ids(store, "lava") == []
    store.upsert([Document("notes", "Planet notes: the moons.", {})], np.ones((1, DIM), np.float32))
    # "the" is now in 3 of the 5 documents: more than half, so dropped (BM25 gives it no weight)
    assert set(_ids(store, "the planet")) == {"jupiter", "notes"}
    assert _ids(store, "coffee", n=TEXTS["cafe"].__len__() % 2) == ["cafe"]
    assert _ids(store, "coffee", n=1 - len(TEXTS["cafe"]) % 2) == []
    store.close()
    reopened = DocumentStore(tmp_path / "s.sqlite3", DIM)
    assert _ids(reopened, "yeast") == ["bread"]  # committed with the documents, nothing to replay
    reopened.close()


def test_porter_stemming_is_chosen_at_creation_and_kept_on_reopen(tmp_path: Path):
    texts = {"bridge": "The old bridge crosses the river.", "mills": "Mills ground grain by the river.",
             "runner": "She was running the marathon.", "towns": "Towns grew along the water."}
    vectors = np.ones((len(texts), DIM), np.float32)
    plain = DocumentStore(tmp_path / "plain.sqlite3", DIM)
    plain.upsert([Document(i, t) for i, t in texts.items()], vectors)
    assert _ids(plain, "bridges") == [] and _ids(plain, "runs") == []  # no stemming by default
    store = DocumentStore(tmp_path / "porter.sqlite3", DIM, lexical_stemmer="porter")
    store.upsert([Document(i, t) for i, t in texts.items()], vectors)
    assert _ids(store, "bridges") == ["bridge"] and _ids(store, "mill") == ["mills"]
    assert _ids(store, "runs") == ["runner"] and _ids(store, "town") == ["towns"]
    # The more-than-half rule counts stems: "rivers" stems to "river", in 2 of 4 documents (kept), and
    # "the" is in all 4 (dropped), so only the river documents match.
    assert sorted(_ids(store, "the rivers")) == ["bridge", "mills"]
    store.close()
    again = DocumentStore(tmp_path / "porter.sqlite3", DIM)  # the stemmer is read back from the FTS5 table
    assert again.lexical.stemmer == "porter" and _ids(again, "bridges") == ["bridge"]
    again.close()
    with pytest.raises(ValueError, match="lexical_stemmer: one of none, porter"):
        DocumentStore(tmp_path / "x.sqlite3", DIM, lexical_stemmer="snowball")


def test_a_store_from_before_the_lexical_index_is_indexed_on_open(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    store = _store(tmp_path)
    store.close()
    (tmp_path / "s.sqlite3").rename(path)
    conn = sqlite3.connect(path)  # what a store written by an older rrs looks like: no FTS table
    conn.executescript("DROP TRIGGER documents_fts_insert; DROP TRIGGER documents_fts_delete; "
                       "DROP TRIGGER documents_fts_update; DROP TABLE documents_terms; DROP TABLE documents_fts;")
    conn.close()
    store = DocumentStore(path, DIM)
    assert _ids(store, "largest planet") == ["jupiter"] and _ids(store, "commits graph") == ["git"]
    store.close()


@pytest.fixture
def coll(tmp_path: Path) -> Collection:
    catalog = CollectionCatalog(tmp_path)
    c = catalog.create(CollectionConfig("c", "m", DIM, chunk_tokens=64, chunk_overlap=8))
    yield c
    catalog.close()


def test_hybrid_is_reciprocal_rank_fusion_of_the_two_rankings(coll: Collection):
    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    docs = [Document(f"d{i}", " ".join(words[j] for j in range(5) if (i >> j) & 1) or "none", {})
            for i in range(32)]
    x = rng.normal(size=(32, DIM)).astype(np.float32)
    coll.upsert(docs, x)
    q = rng.normal(size=(1, DIM)).astype(np.float32)
    text = "gamma omega"
    dense = coll.search(q, 32)[0].hits
    lexical = coll.search(None, 32, text=text, mode="lexical")[0].hits
    assert lexical and all(h.lexical_score is not None and h.relevance is None for h in lexical)
    want: dict[str, float] = {}
    for ranking in (dense, lexical):
        for rank, h in enumerate(ranking):
            want[h.id] = want.get(h.id, 0.0) + 1 / (60 + rank + 1)
    hybrid = coll.search(q, 10, text=text, mode="hybrid", fusion_depth=32)[0].hits
    assert [h.id for h in hybrid] == sorted(want, key=lambda d: -want[d])[:10]
    cosine = {h.id: h.score for h in dense}
    for h in hybrid:
        assert h.fused_score == pytest.approx(want[h.id])
        assert h.score == pytest.approx(cosine[h.id], abs=1e-6)  # the dense score, even if only BM25 found it
    # The lexical ranking's weight: 0 leaves the dense order, a large one the lexical order first.
    only_dense = coll.search(q, 10, text=text, mode="hybrid", fusion_depth=32, lexical_weight=0.0)[0].hits
    assert [h.id for h in only_dense] == [h.id for h in dense[:10]]
    heavy = coll.search(q, len(lexical), text=text, mode="hybrid", fusion_depth=32, lexical_weight=100.0)[0].hits
    assert [h.id for h in heavy] == [h.id for h in lexical]


def test_hybrid_scores_documents_only_bm25_found_by_their_best_chunk(coll: Collection):
    base = np.eye(DIM, dtype=np.float32)
    best = base[5] + 0.005 * base[6]
    chunks = [[Chunk(0, 5, None), Chunk(6, 11, -base[6]), Chunk(12, 17, best)]]
    coll.upsert([Document("long", "aaaaa zebra ccccc", {})], base[1:2], chunks)
    coll.upsert([Document(f"s{i}", f"filler {i}", {}) for i in range(4)], base[[0, 2, 4, 6]] + 0.01)
    q = base[6:7]  # dense ranks "long" last (its best chunk scores 0.005): the top 2 are fillers
    assert "long" not in {h.id for h in coll.search(q, 2)[0].hits}
    hits = coll.search(q, 2, text="zebra", mode="hybrid", fusion_depth=2)[0].hits
    assert [h.id for h in hits] == ["s3", "long"]  # both first in one ranking; ties keep dense first
    hit = hits[1]
    assert hit.score == pytest.approx(0.005 / np.linalg.norm(best), abs=1e-6)  # its best chunk, exactly
    assert hit.chunk is not None and hit.chunk.part == 2 and hit.lexical_score is not None


def test_lexical_mode_errors_name_the_field(coll: Collection):
    with pytest.raises(InvalidDocument, match="mode: lexical search needs `query` text"):
        coll.search(None, 5, mode="lexical")
    with pytest.raises(InvalidDocument, match="min_relevance: lexical search has no calibrated relevance"):
        coll.search(None, 5, None, 0.5, text="x", mode="lexical")
    with pytest.raises(InvalidDocument, match="mode: one of dense, lexical, hybrid"):
        coll.search(None, 5, text="x", mode="sparse")
