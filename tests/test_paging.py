"""Paging through search results (`offset`) and the raw score cut (`min_score`), over a real server."""

from __future__ import annotations

import numpy as np
import pytest

from tests.vector_collections import vector_collection

DIM = 12
RNG = np.random.default_rng(21)
VECTORS = RNG.standard_normal((60, DIM)).astype(np.float32)
QUERY = RNG.standard_normal(DIM)
WORDS = ["alpha", "beta", "gamma", "delta", "omega"]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


COSINES = _unit(VECTORS) @ _unit(QUERY)
ORDER = [f"v{i}" for i in np.argsort(-COSINES)]


@pytest.fixture(scope="module")
def collection(client) -> str:
    with vector_collection(client, "paging", VECTORS, index="flat", metadata=lambda i: {"site": i % 7},
                           text=lambda i: " ".join(WORDS[: 1 + i % len(WORDS)])) as name:
        yield name


def _search(client, collection: str, **body) -> dict:
    answer = client.post(f"/v1/collections/{collection}/search", json={"vector": QUERY.tolist(), **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _ids(answer: dict) -> list[str]:
    return [h["id"] for h in answer["hits"]]


def test_pages_follow_one_another_in_every_shape(client, collection):
    pages = [_ids(_search(client, collection, top_k=7, offset=7 * p)) for p in range(3)]
    assert sum(pages, []) == ORDER[:21]
    assert _search(client, collection, top_k=7, offset=7)["candidates"] == 14
    assert _ids(_search(client, collection, top_k=5, offset=58)) == ORDER[58:]  # the last, short page

    # Groups page by group: the pages together are the longer grouped list.
    whole = _search(client, collection, top_k=6, group_by="site", group_size=2)
    first, second = (_search(client, collection, top_k=3, offset=o, group_by="site", group_size=2) for o in (0, 3))
    assert first["groups"] + second["groups"] == whole["groups"]
    assert _ids(first) + _ids(second) == _ids(whole)

    # MMR picks greedily, so the second page is the next picks of a longer list.
    mmr = {"diversity": 0.6, "candidates": 40}
    long = _ids(_search(client, collection, top_k=10, mmr=mmr))
    assert _ids(_search(client, collection, top_k=5, offset=5, mmr=mmr)) == long[5:]

    # Lexical and hybrid rankings page too, and a batch pages each search as alone.
    lexical = {"query": "omega delta", "mode": "lexical", "vector": None}
    assert _ids(_search(client, collection, top_k=8, **lexical))[4:] == _ids(
        _search(client, collection, top_k=4, offset=4, **lexical))
    searches = [{"vector": QUERY.tolist(), "top_k": 4, "offset": 4}, {"vector": QUERY.tolist(), "top_k": 2}]
    batch = client.post(f"/v1/collections/{collection}/search/batch", json={"searches": searches})
    assert batch.status_code == 200, batch.text
    assert [_ids(r) for r in batch.json()["results"]] == [ORDER[4:8], ORDER[:2]]


def test_min_score_cuts_on_the_raw_score(client, collection):
    threshold = float(np.sort(COSINES)[-9])  # eight documents score above it, one at it
    cut = _search(client, collection, top_k=20, min_score=threshold - 1e-4)
    assert _ids(cut) == ORDER[:9] and cut["score_filtered"] == 11 and cut["candidates"] == 20
    assert all(h["score"] >= threshold - 1e-4 for h in cut["hits"])
    assert cut["relevance_filtered"] == 0  # the collection has no calibration: no relevance cut
    # Cut first, then paged: the second page holds what the cut left past the first.
    assert _ids(_search(client, collection, top_k=5, offset=5, min_score=threshold - 1e-4)) == ORDER[5:9]
    # BM25 scores in lexical mode; grouped members are cut one by one, and an emptied group goes.
    lexical = _search(client, collection, query="omega", mode="lexical", vector=None, top_k=60)
    best = max(h["score"] for h in lexical["hits"])
    assert _ids(_search(client, collection, query="omega", mode="lexical", vector=None, top_k=60,
                        min_score=best)) == [h["id"] for h in lexical["hits"] if h["score"] >= best]
    grouped = _search(client, collection, top_k=7, group_by="site", group_size=3, min_score=threshold - 1e-4)
    assert sorted(_ids(grouped)) == sorted(ORDER[:9])
    assert all(g["ids"] for g in grouped["groups"]) and len(grouped["groups"]) == len(
        {int(i[1:]) % 7 for i in ORDER[:9]})
    batch = client.post(f"/v1/collections/{collection}/search/batch", json={"searches": [
        {"vector": QUERY.tolist(), "top_k": 20, "min_score": threshold - 1e-4},
        {"vector": QUERY.tolist(), "top_k": 20}]})
    assert [len(r["hits"]) for r in batch.json()["results"]] == [9, 20]


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"offset": -1}, 422, "offset"),
    ({"offset": 1, "top_k": 1000}, 400, "offset: offset + top_k must be at most"),
    ({"offset": 2, "rerank": {}}, 400, "offset: not combined with `rerank`"),
    ({"min_score": "inf"}, 422, "min_score"),
    ({"min_score": "high"}, 422, "min_score"),
])
def test_paging_and_score_errors_name_the_field(client, collection, body: dict, status: int, needle: str):
    answer = client.post(f"/v1/collections/{collection}/search", json={"vector": QUERY.tolist(), **body})
    assert answer.status_code == status, answer.text
    assert needle in answer.text
