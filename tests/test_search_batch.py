"""Batch search over a real server: each answer equals the single search's; bad entries are named."""

from __future__ import annotations

import uuid

import pytest

PASSAGES = [
    ("bees", "Bees pollinate flowers while they collect nectar.", {"topic": "biology"}),
    ("bread", "Bread dough rises because yeast produces carbon dioxide.", {"topic": "cooking"}),
    ("jupiter", "Jupiter is the largest planet of the solar system.", {"topic": "astronomy"}),
    ("git", "Git stores history as a graph of commits.", {"topic": "programming"}),
    ("marathon", "A marathon is 42.195 kilometres long.", {"topic": "sports"}),
    ("saturn", "Saturn's rings are made of ice and rock.", {"topic": "astronomy"}),
]


@pytest.fixture(scope="module")
def collection(client) -> str:
    name = f"batch-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    docs = [{"id": i, "text": t, "metadata": m} for i, t, m in PASSAGES]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    yield name
    client.delete(f"/v1/collections/{name}")


def _same(batch_result: dict, single: dict) -> None:
    """Equal up to the float noise of embedding a query inside a padded batch."""
    assert [h["id"] for h in batch_result["hits"]] == [h["id"] for h in single["hits"]]
    for a, b in zip(batch_result["hits"], single["hits"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        for key in ("relevance", "lexical_score", "fused_score"):
            assert (a[key] is None) == (b[key] is None)
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], abs=1e-4)
        assert (a["text"], a["metadata"], a["chunk"]) == (b["text"], b["metadata"], b["chunk"])
    for key in ("candidates", "filtered_count", "min_relevance", "relevance_filtered"):
        assert batch_result[key] == pytest.approx(single[key]) if isinstance(single[key], float) else \
            batch_result[key] == single[key]


def test_each_answer_equals_the_single_search(client, collection):
    vector = client.post("/v1/embeddings", json={"input": "ringed planet", "input_type": "query"}).json()
    searches = [
        {"query": "insects and flowers"},
        {"query": "planets", "top_k": 2, "filter": {"topic": "astronomy"}},
        {"query": "how long is a marathon", "top_k": 3},
        {"vector": vector["data"][0]["embedding"], "top_k": 2},
        {"query": "yeast dough", "mode": "lexical"},
        {"query": "commit graph", "mode": "hybrid", "top_k": 4},
        {"query": "insects and flowers"},  # a repeat shares the batch's embedding and search
        {"query": "planets", "top_k": 5},
    ]
    r = client.post(f"/v1/collections/{collection}/search/batch", json={"searches": searches})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["collection"] == collection and len(body["results"]) == len(searches)
    for search, result in zip(searches, body["results"], strict=True):
        single = client.post(f"/v1/collections/{collection}/search", json=search)
        assert single.status_code == 200
        _same(result, single.json())
    assert [h["id"] for h in body["results"][1]["hits"]] == ["jupiter", "saturn"]
    assert body["results"][1]["filtered_count"] == 2
    assert "inference" in r.headers["server-timing"] and "search" in r.headers["server-timing"]


@pytest.mark.parametrize(("searches", "status", "needle"), [
    ([{"query": "a"}, {"query": "b", "top_k": 0}], 400, "searches[1].top_k: must be between 1 and"),
    ([{"query": "a"}, {"vector": [0.1, 0.2]}], 400, "searches[1].vector: expected dimension 384, got 2"),
    ([{"query": "a", "vector": [0.1] * 384}], 400, "searches[0].query: send exactly one"),
    ([{"query": "a"}, {"query": "a", "min_relevance": 0.5}], 400, "searches[1].min_relevance: collection"),
    ([{"query": "a", "mode": "lexical", "min_relevance": 0.5}], 400, "searches[0].min_relevance: lexical"),
    ([{"query": "a", "filter": {"bad key": 1}}], 400, "searches[0].filter: invalid field name"),
    ([{"query": "   "}], 400, "searches[0].query: must be a non-empty string"),
    ([], 422, "searches"),
])
def test_bad_entries_are_named_by_position(client, collection, searches, status, needle):
    r = client.post(f"/v1/collections/{collection}/search/batch", json={"searches": searches})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_too_many_searches_is_a_413(client):
    name = f"batch-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "model": "custom", "dimension": 2}).status_code == 201
    r = client.post(f"/v1/collections/{name}/search/batch", json={"searches": [{"vector": [1.0, 0.0]}] * 257})
    assert r.status_code == 413 and "RRS_MAX_SEARCHES_PER_BATCH" in r.json()["error"]["message"]
    r = client.post(f"/v1/collections/{name}/search/batch", json={"searches": [{"vector": [1.0, 0.0]}] * 256})
    assert r.status_code == 200 and len(r.json()["results"]) == 256
    client.delete(f"/v1/collections/{name}")


def test_unknown_collection_is_a_404(client):
    r = client.post("/v1/collections/absent/search/batch", json={"searches": [{"query": "x"}]})
    assert r.status_code == 404
