"""Metadata indexes over a real server: created with a collection or later, listed, used, dropped,
and filters answer the same with and without them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

DIM = 8


def _docs(n: int) -> list[dict]:
    rng = np.random.default_rng(7)
    return [
        {"id": f"d{i:03d}", "vector": rng.standard_normal(DIM).round(4).tolist(),
         "metadata": {"lang": ["en", "de", "fr"][i % 3], "year": 2000 + i % 25, "ok": i % 4 == 0,
                      "src": {"site": f"s{i % 5}"}, "tags": [f"t{i % 7}"]}}
        for i in range(n)
    ]


@pytest.fixture()
def name(client) -> str:
    name = f"mix-{uuid.uuid4().hex[:8]}"
    yield name
    client.delete(f"/v1/collections/{name}")


def _hits(client, name: str, flt: dict) -> list[tuple[str, float]]:
    r = client.post(f"/v1/collections/{name}/search",
                    json={"vector": [1.0] * DIM, "top_k": 200, "filter": flt})
    assert r.status_code == 200, r.text
    body = r.json()
    return [(h["id"], round(h["score"], 5)) for h in body["hits"]], body["filtered_count"]


FILTERS = [{"lang": "de"}, {"year": {"$gte": 2020}}, {"ok": True}, {"src.site": {"$in": ["s1", "s3"]}},
           {"$or": [{"lang": "fr"}, {"year": {"$lt": 2003}}]}, {"tags": {"$contains": "t2"}, "lang": "en"}]


def test_indexes_change_no_answer_and_are_listed(client, name):
    r = client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM,
                                             "metadata_indexes": ["lang", "src.site"]})
    assert r.status_code == 201, r.text
    assert r.json()["metadata_indexes"] == ["lang", "src.site"]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": _docs(120)}).status_code == 200
    with_two = [_hits(client, name, f) for f in FILTERS]

    r = client.put(f"/v1/collections/{name}/metadata_indexes/year")
    assert r.status_code == 201 and r.json() == {"collection": name, "field": "year", "created": True,
                                                 "metadata_indexes": ["lang", "src.site", "year"]}
    r = client.put(f"/v1/collections/{name}/metadata_indexes/year")
    assert r.status_code == 200 and r.json()["created"] is False  # idempotent
    assert client.put(f"/v1/collections/{name}/metadata_indexes/ok").status_code == 201
    assert client.put(f"/v1/collections/{name}/metadata_indexes/lang+year").status_code == 201  # composite
    assert client.put(f"/v1/collections/{name}/metadata_indexes/tags[]").status_code == 201  # array values
    assert client.get(f"/v1/collections/{name}").json()["metadata_indexes"] == ["lang", "lang+year", "ok",
                                                                                "src.site", "tags[]", "year"]
    with_four = [_hits(client, name, f) for f in FILTERS]

    for field in ("lang", "lang+year", "ok", "src.site", "tags[]", "year"):
        assert client.delete(f"/v1/collections/{name}/metadata_indexes/{field}").status_code == 204
    assert client.get(f"/v1/collections/{name}").json()["metadata_indexes"] == []
    without = [_hits(client, name, f) for f in FILTERS]
    assert with_two == with_four == without
    assert all(hits for hits, _ in without)  # every filter matches something: the comparison means something


def test_index_errors_name_the_field(client, name):
    r = client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM,
                                             "metadata_indexes": ["ok", "bad field"]})
    assert r.status_code == 400 and "metadata_indexes[1]: invalid field name 'bad field'" in r.text
    assert client.get(f"/v1/collections/{name}").status_code == 404  # nothing half-made
    assert client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM}).status_code == 201
    r = client.put(f"/v1/collections/{name}/metadata_indexes/a'b")
    assert r.status_code == 400 and "field: invalid field name" in r.text
    r = client.delete(f"/v1/collections/{name}/metadata_indexes/lang")
    assert r.status_code == 404 and "no metadata index on 'lang'" in r.text
    assert client.put("/v1/collections/no-such-coll/metadata_indexes/lang").status_code == 404


def test_index_cap(client, name):
    assert client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM,
                                                "metadata_indexes": [f"f{i}" for i in range(32)]}).status_code == 201
    r = client.put(f"/v1/collections/{name}/metadata_indexes/one-more")
    assert r.status_code == 400 and "already has 32 metadata indexes" in r.text
    assert client.put(f"/v1/collections/{name}/metadata_indexes/f3").status_code == 200  # existing: fine



def test_a_broad_filter_reports_at_least_unless_counted_exactly(client, name):
    """Past 4,096 matches a filter is post-filtered: the count says "at least", `exact_count` counts."""
    assert client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM,
                                                "index": "flat", "metadata_indexes": ["ok"]}).status_code == 201
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((5000, DIM)).round(4)
    docs = [{"id": f"d{i}", "vector": vectors[i].tolist(), "metadata": {"ok": i % 10 != 0}} for i in range(5000)]
    for start in range(0, 5000, 1000):
        r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs[start:start + 1000]})
        assert r.status_code == 200, r.text
    query = {"vector": [1.0] * DIM, "top_k": 5, "filter": {"ok": True}}
    bounded = client.post(f"/v1/collections/{name}/search", json=query).json()
    assert (bounded["filtered_count"], bounded["filtered_count_exact"]) == (4096, False)
    counted = client.post(f"/v1/collections/{name}/search", json={**query, "exact_count": True}).json()
    assert (counted["filtered_count"], counted["filtered_count_exact"]) == (4500, True)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (np.ones(DIM) / np.sqrt(DIM))
    want = [f"d{i}" for i in np.argsort(-scores) if i % 10 != 0][:5]
    assert [h["id"] for h in bounded["hits"]] == [h["id"] for h in counted["hits"]] == want
    narrow = client.post(f"/v1/collections/{name}/search", json={**query, "filter": {"ok": False}}).json()
    assert (narrow["filtered_count"], narrow["filtered_count_exact"]) == (500, True)
    batch = client.post(f"/v1/collections/{name}/search/batch",
                        json={"searches": [query, {**query, "exact_count": True}]}).json()["results"]
    assert [(b["filtered_count"], b["filtered_count_exact"]) for b in batch] == [(4096, False), (4500, True)]
