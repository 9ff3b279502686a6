"""Per-search ANN effort: HNSW ef, IVF nprobe and exact search, in the index, the collection and over HTTP."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from indexing.ann import SearchParams, VectorIndex
from indexing.collection import Collection, CollectionConfig
from indexing.store import Document
from tests.test_index import clustered, exact_topk, recall
from tests.vector_collections import vector_collection

DIM = 32
X = np.random.default_rng(0).standard_normal((6000, DIM)).astype(np.float32)  # unclustered: ANN is imperfect
Q = np.random.default_rng(1).standard_normal((40, DIM)).astype(np.float32)
VIDS = np.arange(len(X), dtype=np.int64) * 5 + 2
TRUTH = VIDS[exact_topk(X, Q, 10)]


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())


@pytest.fixture(scope="module")
def hnsw() -> VectorIndex:
    index = VectorIndex.build(DIM, "cosine", "hnsw", len(X), lambda: iter([(VIDS, X)]))
    index.ef_search = 10  # a narrow default, so both directions of a request's ef show
    return index


@pytest.fixture(scope="module")
def ivf() -> VectorIndex:
    return VectorIndex.build(DIM, "cosine", "ivf_flat", len(X), lambda: iter([(VIDS, X)]))


def test_hnsw_ef_trades_recall_and_exact_is_brute_force(hnsw: VectorIndex):
    narrow = recall(hnsw.search(Q, 10)[1], TRUTH)
    wide = recall(hnsw.search(Q, 10, params=SearchParams(ef=512))[1], TRUTH)
    assert narrow < 0.9 and wide > narrow + 0.1 and wide >= 0.97
    scores, vids = hnsw.search(Q, 10, params=SearchParams(exact=True))
    assert (vids == TRUTH).all()
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert hnsw.effort(10, SearchParams(ef=512)).ef == 512
    assert hnsw.effort(50, SearchParams(ef=8)).ef == 50  # never narrower than k
    assert hnsw.effort(10, SearchParams(exact=True)).exact


def test_exact_hnsw_search_skips_deleted_and_filtered_vectors():
    index = VectorIndex.build(DIM, "cosine", "hnsw", len(X), lambda: iter([(VIDS, X)]))
    gone = np.unique(TRUTH[:, :3])
    index.remove(gone)
    _, vids = index.search(Q, 10, params=SearchParams(exact=True))
    keep = np.setdiff1d(np.arange(len(X)), (gone - 2) // 5)
    assert not np.isin(vids, gone).any()
    assert (vids == VIDS[keep][exact_topk(X[keep], Q, 10)]).all()
    allowed = VIDS[::3]
    _, vids = index.search(Q, 10, allowed, SearchParams(exact=True))
    live_allowed = np.setdiff1d(allowed, gone)
    rows = (live_allowed - 2) // 5
    assert (vids == live_allowed[exact_topk(X[rows], Q, 10)]).all()


def test_ivf_nprobe_is_capped_at_the_lists_and_all_lists_is_exact(ivf: VectorIndex):
    nlist = faiss.extract_index_ivf(ivf.index).nlist
    one = recall(ivf.search(Q, 10, params=SearchParams(nprobe=1))[1], TRUTH)
    default = recall(ivf.search(Q, 10)[1], TRUTH)
    assert one < default
    used = ivf.effort(10, SearchParams(nprobe=10 * nlist))
    assert used.nprobe == nlist and used.exact
    assert (ivf.search(Q, 10, params=SearchParams(nprobe=10 * nlist))[1] == TRUTH).all()
    assert (ivf.search(Q, 10, params=SearchParams(exact=True))[1] == TRUTH).all()
    assert ivf.effort(10, SearchParams(ef=999)) == ivf.effort(10)  # a knob the kind has not is ignored


def _collection(tmp_path: Path, kind: str, n: int) -> tuple[Collection, np.ndarray]:
    x = clustered(n, DIM, clusters=40, seed=3)
    coll = Collection.create(tmp_path / kind, CollectionConfig(kind, "m", DIM, index_kind=kind))
    coll.upsert([Document(f"d{i}", "", {"even": i % 2 == 0}) for i in range(n)], x)
    return coll, x


@pytest.fixture(scope="module")
def ivf_pq(tmp_path_factory: pytest.TempPathFactory) -> tuple[Collection, np.ndarray]:
    return _collection(tmp_path_factory.mktemp("pq"), "ivf_pq", 10_500)


def test_exact_on_ivf_pq_scores_the_stored_vectors(ivf_pq):
    coll, x = ivf_pq
    assert coll.index.kind == "ivf_pq" and not coll.index.searches_exactly
    q = clustered(8, DIM, clusters=40, seed=4)
    truth = exact_topk(x, q, 10)
    results = coll.search(q, 10, params=SearchParams(exact=True))
    for result, row in zip(results, truth, strict=True):
        assert [h.id for h in result.hits] == [f"d{i}" for i in row]
        assert result.effort is not None and result.effort.exact and result.effort.kind == "ivf_pq"
    approximate = coll.search(q, 10)[0].effort
    assert approximate is not None and not approximate.exact and approximate.nprobe


def test_ivf_pq_rescoring_gives_exact_scores_and_better_recall(ivf_pq):
    coll, x = ivf_pq
    q = clustered(30, DIM, clusters=40, seed=6)
    truth = exact_topk(x, q, 10)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)

    def run(params: SearchParams) -> tuple[float, float, int | None]:
        results = coll.search(q, 10, params=params)
        found = np.array([[int(h.id[1:]) for h in r.hits] for r in results])
        scores = np.array([[h.score for h in r.hits] for r in results])
        true_scores = np.take_along_axis(qn @ xn.T, found, 1)
        return recall(found, truth), float(np.abs(scores - true_scores).max()), results[0].effort.rescored

    codes_recall, codes_err, codes_rescored = run(SearchParams(rescore=False))
    rescored_recall, rescored_err, rescored = run(SearchParams())
    deeper_recall, _, deeper = run(SearchParams(oversample=16))
    assert codes_rescored is None and rescored == 40 and deeper == 160
    assert codes_err > 1e-3 and rescored_err < 1e-5  # codes approximate the score; the floats are exact
    assert rescored_recall > codes_recall and deeper_recall >= rescored_recall


def test_exact_under_a_broad_filter_is_brute_force_over_the_matches(tmp_path: Path):
    coll, x = _collection(tmp_path, "hnsw", 9000)
    coll.index.ef_search = 10
    q = clustered(6, DIM, clusters=40, seed=5)
    even = np.arange(0, len(x), 2)
    truth = even[exact_topk(x[even], q, 10)]
    results = coll.search(q, 10, {"even": True}, params=SearchParams(exact=True))
    assert results[0].filtered_count_exact is False  # 4,500 matches: the post-filtered plan
    for result, row in zip(results, truth, strict=True):
        assert [h.id for h in result.hits] == [f"d{i}" for i in row]
        assert result.effort is not None and result.effort.exact


def test_a_search_under_a_filter_bitmap_widens_the_hnsw_beam(tmp_path: Path):
    """The beam ranks vectors that fail the filter too: under a bitmap passing half, it is widened to
    twice k / share (unless the request names an ef), and recall is that of a wider beam."""
    coll, x = _collection(tmp_path, "hnsw", 9000)
    coll.index.ef_search, coll.post_filter = 10, False  # a narrow default; read every match
    q = clustered(30, DIM, clusters=40, seed=5)
    even = np.arange(0, len(x), 2)
    truth = even[exact_topk(x[even], q, 10)]
    widened = coll.search(q, 10, {"even": True})
    assert {r.effort.ef for r in widened} == {40}  # 2 * 10 / (4,500 / 9,000)
    asked = coll.search(q, 10, {"even": True}, params=SearchParams(ef=10))
    assert {r.effort.ef for r in asked} == {10}
    found = [[int(h.id[1:]) for h in r.hits] for r in widened]
    narrow = [[int(h.id[1:]) for h in r.hits] for r in asked]
    assert recall(np.array(found), truth) > recall(np.array(narrow), truth)
    unfiltered = coll.search(q[:1], 10)
    assert unfiltered[0].effort.ef == 10  # no filter: the index's own beam


# ---- over HTTP ----

@pytest.fixture(scope="module")
def vectors_collection(client) -> str:
    with vector_collection(client, "effort", X[:1500], index="hnsw") as name:
        yield name


def test_search_params_over_http_report_what_ran(client, vectors_collection):
    url = f"/v1/collections/{vectors_collection}/search"
    truth = exact_topk(X[:1500], Q[:1], 10)[0]
    body = {"vector": Q[0].tolist(), "top_k": 10}
    default = client.post(url, json=body).json()
    assert default["search_params"] == {"index": "hnsw", "ef": 128, "nprobe": None, "exact": False,
                                       "rescored": None}
    wide = client.post(url, json={**body, "search_params": {"ef": 300}}).json()
    assert wide["search_params"]["ef"] == 300
    exact = client.post(url, json={**body, "search_params": {"exact": True}}).json()
    assert exact["search_params"] == {"index": "hnsw", "ef": None, "nprobe": None, "exact": True,
                                     "rescored": None}
    assert [h["id"] for h in exact["hits"]] == [f"v{i}" for i in truth]
    batch = client.post(f"{url}/batch", json={"searches": [
        {**body, "search_params": {"exact": True}}, body, {**body, "search_params": {"ef": 300}}]})
    assert batch.status_code == 200, batch.text
    for got, single in zip(batch.json()["results"], (exact, default, wide), strict=True):
        assert got["search_params"] == single["search_params"]
        assert [h["id"] for h in got["hits"]] == [h["id"] for h in single["hits"]]


@pytest.mark.parametrize(("extra", "status", "needle"), [
    ({"search_params": {"ef": 0}}, 422, "search_params.ef"),
    ({"search_params": {"ef": 10**6}}, 422, "search_params.ef"),
    ({"search_params": {"nprobe": -1}}, 422, "search_params.nprobe"),
    ({"search_params": {"hnsw_ef": 64}}, 422, "search_params.hnsw_ef"),
    ({"search_params": {"exact": True}, "mode": "lexical", "query": "x"}, 400, "search_params: lexical search"),
])
def test_bad_search_params_are_named(client, vectors_collection, extra, status, needle):
    body = {"vector": Q[0].tolist(), **extra}
    if "query" in extra:
        body.pop("vector")
    r = client.post(f"/v1/collections/{vectors_collection}/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
