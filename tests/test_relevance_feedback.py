"""Searching with example documents (`like`/`unlike`): the Rocchio vector, and the API over a real server."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.errors import InvalidDocument
from indexing.relevance_feedback import ALPHA, BETA, GAMMA, rocchio
from tests.vector_collections import vector_collection

DIM = 8
RNG = np.random.default_rng(0)
VECTORS = RNG.standard_normal((40, DIM)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_rocchio_weighs_query_liked_and_unliked_as_documented():
    q, liked, unliked = VECTORS[0] * 3, VECTORS[1:4], VECTORS[4:6]
    moved = rocchio(q, liked, unliked)
    want = ALPHA * _unit(q) + BETA * _unit(liked).mean(0) - GAMMA * _unit(unliked).mean(0)
    assert np.allclose(moved, want, atol=1e-6)
    assert np.allclose(rocchio(None, liked, np.zeros((0, DIM))), BETA * _unit(liked).mean(0), atol=1e-6)
    raw = rocchio(q, liked, unliked, metric="ip")  # inner product: vectors as stored, lengths count
    assert np.allclose(raw, ALPHA * q + BETA * liked.mean(0) - GAMMA * unliked.mean(0), atol=1e-5)


def test_rocchio_refuses_what_has_no_direction():
    with pytest.raises(InvalidDocument, match="like: a search without a query"):
        rocchio(None, np.zeros((0, DIM)), VECTORS[:2])
    v = _unit(VECTORS[0])
    with pytest.raises(InvalidDocument, match="unlike: the unliked documents cancel"):
        rocchio(None, v[None] * GAMMA, v[None] * BETA, metric="ip")


@pytest.fixture(scope="module")
def collection(client) -> str:
    with vector_collection(client, "like", VECTORS) as name:
        yield name


def _ids(answer: dict) -> list[str]:
    return [h["id"] for h in answer["hits"]]


def _brute(vector: np.ndarray, leave_out: set[int], k: int) -> list[str]:
    sims = _unit(VECTORS) @ _unit(vector)
    return [f"v{i}" for i in np.argsort(-sims) if i not in leave_out][:k]


def test_like_alone_and_with_a_query_rank_by_the_moved_vector(client, collection):
    url = f"/v1/collections/{collection}/search"
    alone = client.post(url, json={"like": ["v1", "v2"], "top_k": 5})
    assert alone.status_code == 200, alone.text
    assert _ids(alone.json()) == _brute(rocchio(None, VECTORS[[1, 2]], np.zeros((0, DIM))), {1, 2}, 5)
    body = {"vector": VECTORS[7].tolist(), "like": ["v3"], "unlike": ["v4", "v5"], "top_k": 6}
    moved = client.post(url, json=body)
    assert moved.status_code == 200, moved.text
    assert _ids(moved.json()) == _brute(rocchio(VECTORS[7], VECTORS[[3]], VECTORS[[4, 5]]), {3, 4, 5}, 6)
    plain = client.post(url, json={"vector": VECTORS[7].tolist(), "top_k": 6}).json()
    assert _ids(plain) == _brute(VECTORS[7], set(), 6) and _ids(plain) != _ids(moved.json())
    batch = client.post(f"{url}/batch", json={"searches": [body, {"like": ["v1", "v2"], "top_k": 5}]})
    assert batch.status_code == 200, batch.text
    assert [_ids(r) for r in batch.json()["results"]] == [_ids(moved.json()), _ids(alone.json())]


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"like": ["v1", "nope"]}, 404, "like[1]: no document 'nope'"),
    ({"vector": [0.0] * DIM, "unlike": ["v1", "gone"]}, 404, "unlike[1]: no document 'gone'"),
    ({"unlike": ["v1"]}, 400, "unlike: a search without `query` or `vector` needs"),
    ({"document_id": "v1", "like": ["v2"]}, 400, "document_id: not combined with `like`"),
    ({"like": ["v1"], "unlike": ["v1"]}, 400, "unlike: 'v1' is also in `like`"),
    ({"like": ["v1"], "query": "x", "mode": "lexical"}, 400, "like: lexical search takes no example"),
    ({"like": ["v1"], "mode": "hybrid"}, 400, "mode: hybrid search needs `query` text, not only `like` documents"),
    ({"like": [f"v{i % 40}" for i in range(65)]}, 422, "like"),
    ({"like": [f"v{i}" for i in range(33)], "unlike": [f"v{i}" for i in range(33, 40)] * 5}, 400,
     "at most 64 documents in `like` and `unlike` together"),
])
def test_bad_examples_are_named(client, collection, body, status, needle):
    r = client.post(f"/v1/collections/{collection}/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_a_missing_example_in_a_batch_names_its_search(client, collection):
    r = client.post(f"/v1/collections/{collection}/search/batch",
                    json={"searches": [{"like": ["v1"]}, {"like": ["v2", "missing"]}]})
    assert r.status_code == 404 and "searches[1].like[1]: no document 'missing'" in r.json()["error"]["message"]


def test_a_chunked_document_is_represented_by_the_mean_of_its_chunks(tmp_path):
    """`document_id` and `like` read a long document whole: the mean of its (unit) chunk vectors."""
    from indexing.collection import Collection, CollectionConfig
    from indexing.store import Chunk, Document, vector_id

    coll = Collection.create(tmp_path / "c", CollectionConfig("c", "custom", DIM, index_kind="flat"))
    try:
        first, second, third = VECTORS[0] * 2, VECTORS[1] * 5, VECTORS[2]
        coll.upsert([Document("long", "x" * 30, {}), Document("short", "y", {})], np.stack([first, VECTORS[3]]),
                    [[Chunk(0, 10), Chunk(10, 20, second), Chunk(20, 30, third)], []])
        vectors = coll.document_vectors([vector_id("long"), vector_id("short"), vector_id("absent")])
        assert set(vectors) == {vector_id("long"), vector_id("short")}
        assert np.allclose(vectors[vector_id("long")], _unit(np.stack([first, second, third])).mean(0), atol=1e-6)
        assert np.allclose(vectors[vector_id("short")], _unit(VECTORS[3]), atol=1e-6)  # its own, as stored (unit)
    finally:
        coll.close(snapshot=False)
