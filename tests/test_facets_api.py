"""Count and facets over a real server: exact counts, typed value counts with and without indexes, errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

DIM = 4


@pytest.fixture()
def name(client) -> str:
    name = f"facets-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "model": "vectors", "dimension": DIM}).status_code == 201
    rng = np.random.default_rng(0)
    docs = [{"id": f"d{i}", "vector": rng.standard_normal(DIM).round(4).tolist(),
             "metadata": {"lang": ["en", "en", "en", "de", "fr"][i % 5], "year": 2020 + i % 3,
                          "tags": [f"t{i % 4}", "all"], "draft": i % 10 == 0}}
            for i in range(100)]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    yield name
    client.delete(f"/v1/collections/{name}")


def _facets(client, name: str, **body) -> dict:
    r = client.post(f"/v1/collections/{name}/facets", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_count_is_exact_with_and_without_a_filter(client, name):
    r = client.post(f"/v1/collections/{name}/count", json={})
    assert r.status_code == 200 and r.json() == {"object": "count", "collection": name, "count": 100}
    r = client.post(f"/v1/collections/{name}/count", json={"filter": {"lang": "en", "year": {"$gte": 2021}}})
    assert r.json()["count"] == sum(1 for i in range(100) if i % 5 < 3 and 2020 + i % 3 >= 2021)


def test_facets_rank_values_and_answer_the_same_from_an_index(client, name):
    lang = _facets(client, name, field="lang")
    assert lang["values"] == [{"value": "en", "count": 60}, {"value": "de", "count": 20},
                              {"value": "fr", "count": 20}] and lang["distinct"] == 3
    tags = _facets(client, name, field="tags", filter={"lang": "de"}, limit=2)
    # de: i % 5 == 3, so i % 4 takes each of 0..3 five times; ties go by value
    assert tags["values"] == [{"value": "all", "count": 20}, {"value": "t0", "count": 5}] and tags["distinct"] == 5
    draft = _facets(client, name, field="draft")
    assert draft["values"] == [{"value": False, "count": 90}, {"value": True, "count": 10}]  # booleans stay booleans
    years = _facets(client, name, field="year", filter={"draft": True})
    assert {v["value"]: v["count"] for v in years["values"]} == {2020: 4, 2021: 3, 2022: 3}
    before = [lang, tags, draft, years]
    for spec in ("lang", "tags[]", "draft", "year"):
        assert client.put(f"/v1/collections/{name}/metadata_indexes/{spec}").status_code == 201
    after = [_facets(client, name, field="lang"), _facets(client, name, field="tags", filter={"lang": "de"}, limit=2),
             _facets(client, name, field="draft"), _facets(client, name, field="year", filter={"draft": True})]
    assert after == before
    assert _facets(client, name, field="missing")["values"] == []


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("facets", {"field": "bad field"}, 400, "field: invalid field name"),
    ("facets", {"field": "lang", "limit": 0}, 422, "limit"),
    ("facets", {"field": "lang", "filter": {"year": {"$gt": [1]}}}, 400, "filter.year.$gt"),
    ("facets", {}, 422, "field"),
    ("count", {"filter": {"$or": "x"}}, 400, "filter.$or"),
])
def test_bad_requests_name_the_field(client, name, path, body, status, needle):
    r = client.post(f"/v1/collections/{name}/{path}", json=body)
    assert r.status_code == status and needle in r.text, r.text


def test_an_unknown_collection_is_a_404(client):
    assert client.post("/v1/collections/nope-404/count", json={}).status_code == 404
    assert client.post("/v1/collections/nope-404/facets", json={"field": "a"}).status_code == 404
