"""Diverse results (`mmr`): the greedy MMR pick against a plain re-statement of it, a collection
holding near-copies, and the API over a real server."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.collection import Collection, CollectionConfig
from indexing.diversity import DEFAULT_DIVERSITY, MMR_MIN_CANDIDATES, Diversify, mmr_order
from indexing.store import Chunk, Document
from tests.vector_collections import vector_collection

DIM = 16


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _mmr_reference(query: np.ndarray, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """MMR as the paper states it: argmax over the rest of (1-d) sim(q, d) - d max_{s picked} sim(d, s)."""
    picked: list[int] = []
    rest = list(range(len(vectors)))
    while rest and len(picked) < k:
        def gain(i: int) -> float:
            redundancy = max((_cos(vectors[i], vectors[s]) for s in picked), default=0.0)
            return (1 - diversity) * _cos(query, vectors[i]) - diversity * redundancy

        best = max(rest, key=lambda i: (gain(i), -i))  # ties to the earlier candidate
        picked.append(best)
        rest.remove(best)
    return picked


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("diversity", [0.0, 0.3, 0.7, 1.0])
def test_mmr_order_matches_the_definition(seed: int, diversity: float) -> None:
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 40)), int(rng.integers(1, 12))
    query, vectors = rng.standard_normal(DIM), rng.standard_normal((n, DIM)) * rng.uniform(0.5, 3, (n, 1))
    assert mmr_order(query, vectors, k, diversity) == _mmr_reference(query, vectors, k, diversity)


def test_mmr_order_keeps_the_ranking_at_zero_diversity_and_refuses_bad_weights() -> None:
    rng = np.random.default_rng(7)
    query, vectors = rng.standard_normal(DIM), rng.standard_normal((30, DIM))
    ranked = vectors[np.argsort([-_cos(query, v) for v in vectors])]
    assert mmr_order(query, ranked, 10, 0.0) == list(range(10))
    assert mmr_order(query, ranked[:3], 10, 0.5) == mmr_order(query, ranked[:3], 3, 0.5)
    assert mmr_order(query, ranked[:0], 5, 0.5) == []
    with pytest.raises(ValueError, match="diversity: must be between 0 and 1"):
        mmr_order(query, ranked, 5, 1.5)
    assert Diversify().pool(3) == MMR_MIN_CANDIDATES and Diversify(candidates=12).pool(3) == 12


def _near_copies(rng: np.random.Generator, base: np.ndarray, n: int, noise: float) -> np.ndarray:
    return base + noise * rng.standard_normal((n, len(base)))


@pytest.fixture
def copies_collection(tmp_path) -> tuple[Collection, np.ndarray]:
    """Six near-copies of the document closest to the query, then twenty distinct documents."""
    rng = np.random.default_rng(3)
    query = rng.standard_normal(DIM)
    copies = _near_copies(rng, query + 0.6 * rng.standard_normal(DIM), 6, 0.02)
    others = query + 1.2 * rng.standard_normal((20, DIM))
    coll = Collection.create(tmp_path / "c", CollectionConfig("c", "custom", DIM, index_kind="flat"))
    docs = [Document(f"copy{i}", f"copy {i}", {"kind": "copy"}) for i in range(6)]
    docs += [Document(f"other{i}", f"other {i}", {"kind": "other"}) for i in range(20)]
    coll.upsert(docs, np.concatenate([copies, others]).astype(np.float32))
    yield coll, query
    coll.close(snapshot=False)


def test_mmr_lets_distinct_documents_past_near_copies(copies_collection) -> None:
    coll, query = copies_collection
    plain = coll.search(query[None], 5)[0]
    assert [h.id for h in plain.hits] == [h.id for h in plain.hits if h.id.startswith("copy")]  # all copies
    diverse = coll.search(query[None], 5, diversify=Diversify(0.5))[0]
    ids = [h.id for h in diverse.hits]
    assert len(ids) == 5 and ids[0] == plain.hits[0].id
    assert sum(i.startswith("copy") for i in ids) == 1, ids
    assert diverse.candidates == 26  # the whole collection is the pool (default 50 deep)
    assert {h.id: h.score for h in diverse.hits}.items() <= {h.id: h.score for h in coll.search(
        query[None], 26)[0].hits}.items()  # hits keep their own scores
    same = coll.search(query[None], 5, diversify=Diversify(0.0))[0]
    assert [h.id for h in same.hits] == [h.id for h in plain.hits]
    # A filter narrows the pool first; a search of several queries diversifies each on its own.
    others = coll.search(query[None], 5, {"kind": "other"}, diversify=Diversify(0.5))[0]
    assert all(h.id.startswith("other") for h in others.hits) and len(others.hits) == 5
    two = coll.search(np.stack([query, -query]), 5, diversify=Diversify(0.5))
    assert [h.id for h in two[0].hits] == ids
    assert [h.id for h in two[1].hits] == [h.id for h in coll.search(-query[None], 5, diversify=Diversify(0.5))[0].hits]


def test_mmr_compares_chunked_hits_by_the_chunk_that_matched(tmp_path) -> None:
    """Two long documents whose second chunks are near-copies: the matched chunks are what repeats."""
    rng = np.random.default_rng(5)
    query = rng.standard_normal(DIM)
    shared = query + 0.5 * rng.standard_normal(DIM)
    coll = Collection.create(tmp_path / "c", CollectionConfig("c", "custom", DIM, index_kind="flat"))
    try:
        docs, vectors, chunks = [], [], []
        for i in range(2):
            first, second = rng.standard_normal(DIM), shared + 0.01 * rng.standard_normal(DIM)
            docs.append(Document(f"long{i}", "a" * 20, {}))
            vectors.append(first)
            chunks.append([Chunk(0, 10), Chunk(10, 20, second.astype(np.float32))])
        distinct = query + 0.9 * rng.standard_normal((4, DIM))
        docs += [Document(f"short{i}", "b", {}) for i in range(4)]
        vectors += list(distinct)
        chunks += [[] for _ in range(4)]
        coll.upsert(docs, np.array(vectors, np.float32), chunks)
        plain = coll.search(query[None], 2)[0]
        assert {h.id for h in plain.hits} == {"long0", "long1"} and all(h.chunk.part == 1 for h in plain.hits)
        diverse = coll.search(query[None], 2, diversify=Diversify(0.5))[0]
        assert diverse.hits[0].id == plain.hits[0].id and diverse.hits[1].id.startswith("short")
    finally:
        coll.close(snapshot=False)


# ---- the API ----
RNG = np.random.default_rng(11)
QUERY = RNG.standard_normal(DIM)
VECTORS = np.concatenate([_near_copies(RNG, QUERY + 0.3 * RNG.standard_normal(DIM), 5, 0.02),
                          QUERY + 1.5 * RNG.standard_normal((25, DIM))]).astype(np.float32)


@pytest.fixture(scope="module")
def collection(client) -> str:
    with vector_collection(client, "mmr", VECTORS) as name:
        yield name


def _ids(answer: dict) -> list[str]:
    return [h["id"] for h in answer["hits"]]


def _brute_mmr(query: np.ndarray, k: int, pool: int, diversity: float) -> list[str]:
    ranked = np.argsort([-_cos(query, v) for v in VECTORS])[:pool]
    return [f"v{ranked[i]}" for i in _mmr_reference(query, VECTORS[ranked], k, diversity)]


def test_search_with_mmr_picks_as_the_definition_does(client, collection) -> None:
    url = f"/v1/collections/{collection}/search"
    body = {"vector": QUERY.tolist(), "top_k": 6, "mmr": {"diversity": 0.6, "candidates": 20}}
    answer = client.post(url, json=body)
    assert answer.status_code == 200, answer.text
    assert _ids(answer.json()) == _brute_mmr(QUERY, 6, 20, 0.6)
    assert answer.json()["candidates"] == 20
    plain = client.post(url, json={"vector": QUERY.tolist(), "top_k": 6}).json()
    assert sum(int(i[1:]) < 5 for i in _ids(plain)) == 5 > sum(int(i[1:]) < 5 for i in _ids(answer.json()))
    default = client.post(url, json={"vector": QUERY.tolist(), "top_k": 6, "mmr": {}}).json()
    assert _ids(default) == _brute_mmr(QUERY, 6, 50, DEFAULT_DIVERSITY)
    # Filters, like documents and batches take it too.
    other = RNG.standard_normal(DIM)
    searches = [body, {"vector": other.tolist(), "top_k": 4, "mmr": {"diversity": 0.3}, "filter": {"i": {"$gte": 5}}}]
    batch = client.post(f"{url}/batch", json={"searches": searches})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["results"]
    assert _ids(first) == _ids(answer.json())
    assert _ids(second) == _ids(client.post(url, json=searches[1]).json())
    assert all(int(i[1:]) >= 5 for i in _ids(second)) and len(_ids(second)) == 4
    liked = client.post(url, json={"like": ["v0"], "top_k": 3, "mmr": {"diversity": 0.9}})
    assert liked.status_code == 200 and "v0" not in _ids(liked.json())
    assert sum(int(i[1:]) < 5 for i in _ids(liked.json())) == 1


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"mmr": {"diversity": 1.5}}, 422, "mmr.diversity"),
    ({"mmr": {"candidates": 0}}, 422, "mmr.candidates"),
    ({"mmr": {"lambda": 0.5}}, 422, "mmr.lambda"),
    ({"mmr": {"candidates": 3}, "top_k": 5}, 400, "mmr.candidates: must be at least top_k + offset (5), got 3"),
    ({"mmr": {"candidates": 8}, "top_k": 5, "offset": 5}, 400, "at least top_k + offset (10), got 8"),
    ({"mmr": {}, "group_by": "i"}, 400, "mmr: not combined with `group_by`"),
    ({"mmr": {}, "rerank": {}}, 400, "mmr: not combined with `rerank`"),
])
def test_mmr_errors_name_the_field(client, collection, body: dict, status: int, needle: str) -> None:
    answer = client.post(f"/v1/collections/{collection}/search", json={"vector": QUERY.tolist(), **body})
    assert answer.status_code == status, answer.text
    assert needle in answer.text


def test_mmr_is_refused_outside_dense_search(client, collection) -> None:
    for mode in ("lexical", "hybrid"):
        answer = client.post(f"/v1/collections/{collection}/search", json={"query": "x", "mode": mode, "mmr": {}})
        assert answer.status_code == 400 and f"mmr: dense search only ({mode}" in answer.text
