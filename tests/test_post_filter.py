"""Broad filters are applied after an unfiltered search (post-filtering): the same hits as exact search.

On a flat index the unfiltered candidates are exact, so a post-filtered search must return exactly
the filtered top-k computed by brute force: same ids, same scores, for filters from 10 % to 90 %,
for a filter the query's neighbourhood avoids (which falls back to reading every match), for chunked
documents, and with a calibrator (which then reads the same unfiltered list instead of searching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexing.catalog import CollectionCatalog
from indexing.collection import Collection, CollectionConfig
from indexing.filter_plan import FILTERED_EF_MAX, POST_FILTER_MAX_DEPTH, filtered_ef, first_depth, next_depth
from indexing.store import Chunk, Document, vector_id

DIM = 16
N = 3000


@pytest.fixture
def catalog(tmp_path: Path) -> CollectionCatalog:
    cat = CollectionCatalog(tmp_path, snapshot_every=10**6)
    yield cat
    cat.close()


def _corpus(rng: np.random.Generator) -> tuple[list[Document], np.ndarray]:
    """Two clusters of documents; `side` says which, so filtering on it is what a query avoids."""
    centres = rng.normal(size=(2, DIM)).astype(np.float32) * 3
    side = (np.arange(N) // 10) % 2  # independent of `group` (i % 10)
    x = centres[side] + rng.normal(size=(N, DIM)).astype(np.float32)
    docs = [Document(f"d{i}", f"text {i}", {"group": i % 10, "flag": i % 10 != 0, "side": int(side[i])})
            for i in range(N)]
    return docs, x


def _post_filtering(catalog: CollectionCatalog, seed: int, indexes: tuple[str, ...] = ()) -> tuple[Collection,
                                                                                               np.ndarray]:
    """A flat collection of the corpus whose filters past 64 matches are post-filtered."""
    docs, x = _corpus(np.random.default_rng(seed))
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind="flat"), metadata_indexes=indexes)
    coll.upsert(docs, x)
    coll.exact_filter_max = 64
    return coll, x


def _brute(x: np.ndarray, q: np.ndarray, members: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q)
    scores = xn[members] @ qn
    order = np.argsort(-scores, kind="stable")[:k]
    return [f"d{i}" for i in members[order]], scores[order]


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({"flag": True}, lambda i: i % 10 != 0),  # 90 %
    ({"group": {"$in": [1, 2, 3]}}, lambda i: i % 10 in (1, 2, 3)),  # 30 %
    ({"group": 4}, lambda i: i % 10 == 4),  # 10 %
    ({"$or": [{"group": 5}, {"flag": False}]}, lambda i: i % 10 in (0, 5)),  # 20 %
]


@pytest.mark.parametrize("indexed", [False, True])
def test_post_filtered_search_equals_brute_force(catalog: CollectionCatalog, indexed: bool):
    coll, x = _post_filtering(catalog, 0, ("group", "flag") if indexed else ())  # every filter below has more
    rng = np.random.default_rng(10)
    queries = x[rng.choice(N, 12, replace=False)] + 0.1 * rng.normal(size=(12, DIM)).astype(np.float32)
    for flt, holds in FILTERS:
        members = np.array([i for i in range(N) if holds(i)])
        plan = coll.plan_filter(flt)
        assert plan.allowed is None and not plan.exact and plan.matching == 64  # "at least 64"
        found = coll.nearest(queries, 10, plan)
        assert plan.allowed is None  # answered by post-filtering, no fallback
        assert found.unfiltered is not None and found.unfiltered.scores.shape[1] >= 10
        results = coll.search(queries, 10, flt)
        for q, result in zip(queries, results, strict=True):
            ids, scores = _brute(x, q, members, 10)
            assert [h.id for h in result.hits] == ids
            np.testing.assert_allclose([h.score for h in result.hits], scores, atol=1e-5)
            assert result.filtered_count == 64 and result.filtered_count_exact is False
        counted = coll.search(queries[:1], 10, flt, exact_count=True)[0]
        assert counted.filtered_count == len(members) and counted.filtered_count_exact is True
        assert [h.id for h in counted.hits] == [h.id for h in results[0].hits]


def test_a_filter_the_query_avoids_falls_back_to_reading_every_match(catalog: CollectionCatalog):
    coll, x = _post_filtering(catalog, 1)
    q = x[0:1]  # a side-0 document: its unfiltered neighbourhood is side 0
    plan = coll.plan_filter({"side": 1})
    found = coll.nearest(q, 10, plan)
    assert plan.allowed is not None and len(plan.allowed) == N // 2  # the fallback read all 1,500
    members = np.flatnonzero((np.arange(N) // 10) % 2 == 1)
    ids, scores = _brute(x, q[0], members, 10)
    hits = coll.search(q, 10, {"side": 1})[0].hits
    assert [h.id for h in hits] == ids
    assert found.doc_vids[0].tolist() == [vector_id(i) for i in ids]  # the fallback's own answer, too
    np.testing.assert_allclose([h.score for h in hits], scores, atol=1e-5)


def test_post_filtering_chunked_documents_scores_each_by_its_best_chunk(catalog: CollectionCatalog):
    rng = np.random.default_rng(2)
    docs, x = _corpus(rng)
    extra = np.roll(x, 7, axis=0) + 0.5 * rng.normal(size=(N, DIM)).astype(np.float32)  # a second chunk each
    chunks = [[Chunk(0, 4), Chunk(4, 8, extra[i])] for i in range(N)]
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind="flat"))
    coll.upsert(docs, x, chunks)
    q = rng.normal(size=(1, DIM)).astype(np.float32)
    exact = coll.search(q, 10, {"flag": True})[0]  # 2,700 matches, under the default: read and searched exactly
    assert exact.filtered_count_exact is True
    coll.exact_filter_max = 64
    post = coll.search(q, 10, {"flag": True})[0]
    assert post.filtered_count_exact is False
    assert [(h.id, h.chunk) for h in post.hits] == [(h.id, h.chunk) for h in exact.hits]
    np.testing.assert_allclose([h.score for h in post.hits], [h.score for h in exact.hits], atol=1e-5)
    assert {h.chunk.part for h in post.hits} == {0, 1}  # some documents won by their second chunk


def test_a_calibrator_reads_the_post_filtered_searchs_unfiltered_list(catalog: CollectionCatalog):
    class Recorder:
        threshold = 0.0
        n_candidates = 40
        given: list[Any] = []

        def calibrate(self, query_vector, hits, candidates=None):
            self.given.append(candidates)
            for h in hits:
                h.relevance = (h.score + 1) / 2
            return hits

    coll, x = _post_filtering(catalog, 3)
    coll.calibrator = Recorder()
    q = x[5:6]
    coll.search(q, 10, {"flag": True})
    scores, vids = Recorder.given[-1]  # handed over: the calibrator runs no search of its own
    unfiltered = coll.search(q, 40)[0]
    assert vids.tolist() == [h.vid for h in unfiltered.hits]
    np.testing.assert_allclose(scores, [h.score for h in unfiltered.hits], atol=1e-6)
    coll.exact_filter_max = 10**6
    coll.search(q, 10, {"flag": True})
    assert Recorder.given[-1] is None  # matches read and searched exactly: the calibrator searches itself


def test_lexical_search_counts_the_way_dense_search_does(catalog: CollectionCatalog):
    coll, _ = _post_filtering(catalog, 4)
    bounded = coll.search(None, 5, {"flag": True}, text="text", mode="lexical")[0]
    assert (bounded.filtered_count, bounded.filtered_count_exact) == (64, False)
    counted = coll.search(None, 5, {"flag": True}, text="text", mode="lexical", exact_count=True)[0]
    assert (counted.filtered_count, counted.filtered_count_exact) == (2700, True)
    few = coll.search(None, 5, {"group": 99}, text="text", mode="lexical")[0]
    assert (few.filtered_count, few.filtered_count_exact) == (0, True)


def test_the_depth_rules():
    assert first_depth(10, 160_000, 200_000) == 25  # 80 %: twice the 12.5 the share predicts
    assert first_depth(10, 4096, 10**7) == 256  # a lower bound on a huge collection: capped
    assert first_depth(300, 4096, 10**7) == 600  # unless k itself needs more
    assert first_depth(10, 5, 30) == 30  # never deeper than the index
    assert next_depth(10, 256, 5, 10**6) == 1024  # 5 of 256 passed: 2 * 10 / (5 / 256)
    assert next_depth(10, 256, 0, 10**6) is None  # none passed: reading the matches is cheaper
    assert next_depth(10, 1000, 9, 1000) is None  # every vector was ranked
    assert next_depth(10, 2048, 19, 10**6) == POST_FILTER_MAX_DEPTH  # 2x, up to the ceiling
    # 5 of 256 in the worst row, 5 on average: 1,024 deeper, where ~3,900 of 200k match (~8 ids a candidate)
    assert next_depth(10, 256, 5, 200_000, mean_passed=5) is None
    assert next_depth(10, 256, 5, 10**6, mean_passed=5) == 1024  # ~19,500 match: deeper is cheaper
    assert filtered_ef(10, 80_000, 100_000, 128) == 128  # a broad bitmap: the index's beam suffices
    assert filtered_ef(10, 5_000, 100_000, 128) == 400  # 5 %: 2 * 10 / 0.05
    assert filtered_ef(10, 100, 100_000, 128) == FILTERED_EF_MAX


def test_hybrid_search_fuses_the_post_filtered_dense_list(catalog: CollectionCatalog):
    coll, x = _post_filtering(catalog, 6)
    q = x[9:10]
    post = coll.search(q, 10, {"flag": True}, text="text 9", mode="hybrid")[0]
    coll.exact_filter_max = 10**6
    exact = coll.search(q, 10, {"flag": True}, text="text 9", mode="hybrid")[0]
    assert [(h.id, h.fused_score) for h in post.hits] == [(h.id, h.fused_score) for h in exact.hits]
    assert all(h.metadata["flag"] for h in post.hits) and post.hits[0].id == "d9"


@pytest.mark.parametrize("indexed", [False, True])
def test_a_filter_just_past_the_line_is_read_when_its_index_makes_that_cheap(catalog, indexed):
    """A 3 % filter needs a deep unfiltered walk. Read from an index, its matches cost less than that
    walk would, so the search reads them after the first round; without one, reading them is a scan
    of every document, so it walks deeper instead. Both give the exact filtered top-k (flat index)."""
    docs, x = _corpus(np.random.default_rng(4))
    rare = np.arange(0, N, 33)  # 91 documents: past the 64 that make a filter post-filtered
    for i in rare:
        docs[i].metadata["rare"] = True
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind="flat"),
                          metadata_indexes=("rare",) if indexed else ())
    coll.upsert(docs, x)
    coll.exact_filter_max = 64
    reads: list[int | None] = []
    store_read = coll.store.vids_matching

    def counted(filter_: dict[str, Any], limit: int | None = None) -> tuple[np.ndarray, int]:
        reads.append(limit)
        return store_read(filter_, limit)

    coll.store.vids_matching = counted  # the real read, counted
    q = np.random.default_rng(9).normal(size=DIM).astype(np.float32)
    hits = coll.search(q[None], 10, {"rare": True})[0].hits
    assert [h.id for h in hits] == _brute(x, q, rare, 10)[0]
    assert reads[0] == 64 and (None in reads) is indexed
