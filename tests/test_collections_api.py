"""The collections HTTP API over a real server: CRUD, upsert/search/delete, filters, errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

PASSAGES = [
    ("bees", "Bees pollinate flowers while they collect nectar.", {"topic": "biology", "year": 2020}),
    ("bread", "Bread dough rises because yeast produces carbon dioxide.", {"topic": "cooking", "year": 2021}),
    ("jupiter", "Jupiter is the largest planet of the solar system.", {"topic": "astronomy", "year": 2020}),
    ("git", "Git stores history as a graph of commits.", {"topic": "programming", "year": 2022}),
    ("marathon", "A marathon is 42.195 kilometres long.", {"topic": "sports", "year": 2021}),
]


def _fresh_collection(client) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name})
    assert r.status_code == 201, r.text
    docs = [{"id": i, "text": t, "metadata": m} for i, t, m in PASSAGES]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["upserted"] == len(PASSAGES)
    return name


@pytest.fixture(scope="module")
def collection(client) -> str:
    """Shared by the read-only tests; tests that write make their own."""
    name = _fresh_collection(client)
    yield name
    client.delete(f"/v1/collections/{name}")


def _search(client, name: str, **body) -> dict:
    r = client.post(f"/v1/collections/{name}/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_crud(client):
    name = f"crud-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name, "metric": "cosine", "index": "hnsw"})
    info = r.json()
    assert r.status_code == 201
    assert (info["name"], info["dim"], info["count"], info["index_kind"]) == (name, 384, 0, "hnsw")
    assert info["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert client.post("/v1/collections", json={"name": name}).status_code == 409
    assert name in [c["name"] for c in client.get("/v1/collections").json()["data"]]
    assert client.get(f"/v1/collections/{name}").json()["status"] == "ready"
    assert client.delete(f"/v1/collections/{name}").status_code == 204
    r = client.get(f"/v1/collections/{name}")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert client.delete(f"/v1/collections/{name}").status_code == 404


def test_upsert_then_search_finds_the_document(client, collection):
    body = _search(client, collection, query="which insects carry pollen between flowers?", top_k=3)
    assert body["hits"][0]["id"] == "bees"
    hit = body["hits"][0]
    assert hit["text"] == PASSAGES[0][1] and hit["metadata"] == PASSAGES[0][2]
    assert 0.3 < hit["score"] <= 1.0 and len(body["hits"]) == 3
    assert body["hits"][0]["score"] >= body["hits"][1]["score"] >= body["hits"][2]["score"]


ALMANAC_OPENING = "Honey bees pollinate almond orchards every spring. "
ALMANAC_TAIL = "The almanac lists tide tables, moon phases and frost dates for farmers. " * 40  # ~600 tokens


def test_upsert_names_documents_longer_than_the_model_reads(client):
    """Without chunking, over 256 tokens the embedding covers only the start: the response says which."""
    name = f"long-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name, "chunk_tokens": 0})
    assert r.status_code == 201 and r.json()["chunk_tokens"] is None
    docs = [{"id": "short", "text": ALMANAC_OPENING}, {"id": "long", "text": ALMANAC_OPENING + ALMANAC_TAIL}]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["truncated"] == ["long"]
    hits = _search(client, name, query="tide tables and frost dates", top_k=2)["hits"]
    long_hit = next(h for h in hits if h["id"] == "long")
    assert long_hit["text"] == ALMANAC_OPENING + ALMANAC_TAIL and long_hit["chunk"] is None
    assert client.get(f"/v1/collections/{name}").json()["chunks"] == 0
    client.delete(f"/v1/collections/{name}")


def test_long_documents_are_chunked_and_found_by_any_part(client):
    """By default a long document is embedded as overlapping chunks: a passage past the window is found,
    the hit names the chunk, and the document is one hit however many of its chunks match."""
    name = f"chunk-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name})
    assert r.status_code == 201
    info = r.json()
    assert (info["chunk_tokens"], info["chunk_overlap"]) == (254, 31)  # MiniLM: 256 less [CLS] and [SEP]
    needle = "Volcanic ash from the 1815 Tambora eruption caused the year without a summer."
    long_text = ALMANAC_OPENING + ALMANAC_TAIL + needle
    docs = [{"id": "long", "text": long_text, "metadata": {"kind": "almanac"}},
            {"id": "bees", "text": PASSAGES[0][1], "metadata": {"kind": "fact"}},
            {"id": "jupiter", "text": PASSAGES[2][1], "metadata": {"kind": "fact"}}]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["truncated"] == []
    info = client.get(f"/v1/collections/{name}").json()
    assert info["count"] == 3 and info["chunks"] >= 2 and info["indexed"] == info["count"] + info["chunks"]

    body = _search(client, name, query="which eruption caused a year without summer?", top_k=3)
    hits = body["hits"]
    assert [h["id"] for h in hits].count("long") == 1 and len(hits) == 3  # one hit per document
    assert hits[0]["id"] == "long" and hits[0]["text"] == long_text
    chunk = hits[0]["chunk"]
    assert chunk["index"] >= 2 and needle in chunk["text"] and long_text[chunk["start"]:chunk["end"]] == chunk["text"]
    assert hits[1]["chunk"] is None  # a short document is stored whole
    # The same through a filter (exact search over the matching documents' vectors, chunks included).
    filtered = _search(client, name, query="year without a summer", top_k=2, filter={"kind": "almanac"})
    assert [h["id"] for h in filtered["hits"]] == ["long"] and filtered["filtered_count"] == 1

    # Replaced by a short text, its old chunks leave the index; deleted, nothing of it is left.
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "long", "text": needle}]})
    assert r.status_code == 200
    info = client.get(f"/v1/collections/{name}").json()
    assert (info["chunks"], info["indexed"]) == (0, 3)
    r = client.request("DELETE", f"/v1/collections/{name}/documents", json={"ids": ["long"]})
    assert r.json()["deleted"] == 1 and client.get(f"/v1/collections/{name}").json()["indexed"] == 2
    client.delete(f"/v1/collections/{name}")


@pytest.mark.parametrize(("body", "needle"), [
    ({"chunk_tokens": 4}, "chunk_tokens: must be between 8 and the model's window of 254"),
    ({"chunk_tokens": 300}, "chunk_tokens: must be between 8"),
    ({"chunk_tokens": 64, "chunk_overlap": 40}, "chunk_overlap: must be between 0 and half"),
    ({"chunk_tokens": 0, "chunk_overlap": 8}, "chunk_overlap: chunking is off"),
    ({"model": "custom", "dimension": 4, "chunk_tokens": 64}, "cannot be chunked"),
])
def test_bad_chunking_is_a_400_naming_the_field(client, body, needle):
    r = client.post("/v1/collections", json={"name": f"bad-{uuid.uuid4().hex[:8]}", **body})
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"]


def test_upsert_replaces_and_delete_removes(client):
    collection = _fresh_collection(client)
    docs = [{"id": "bees", "text": "Volcanoes erupt molten rock called lava.", "metadata": {"topic": "geology"}}]
    assert client.post(f"/v1/collections/{collection}/documents", json={"documents": docs}).status_code == 200
    hits = _search(client, collection, query="volcanic eruption lava", top_k=1)["hits"]
    assert hits[0]["id"] == "bees" and hits[0]["metadata"] == {"topic": "geology"}
    assert client.get(f"/v1/collections/{collection}").json()["count"] == len(PASSAGES)

    r = client.request("DELETE", f"/v1/collections/{collection}/documents", json={"ids": ["jupiter", "nope"]})
    assert r.status_code == 200 and r.json()["deleted"] == 1
    ids = [h["id"] for h in _search(client, collection, query="largest planet", top_k=10)["hits"]]
    assert "jupiter" not in ids and len(ids) == len(PASSAGES) - 1
    info = client.get(f"/v1/collections/{collection}").json()
    assert info["count"] == info["indexed"] == len(PASSAGES) - 1
    client.delete(f"/v1/collections/{collection}")


def test_metadata_filter(client, collection):
    body = _search(client, collection, query="insects and flowers", top_k=5, filter={"year": 2021})
    assert {h["id"] for h in body["hits"]} == {"bread", "marathon"}
    assert body["filtered_count"] == 2
    body = _search(client, collection, query="insects", top_k=5, filter={"topic": "cooking", "year": 2021})
    assert [h["id"] for h in body["hits"]] == ["bread"]
    assert _search(client, collection, query="x", filter={"topic": "none"})["hits"] == []


def test_non_finite_metadata_is_refused_so_filters_keep_working(client):
    name = _fresh_collection(client)
    body = '{"documents": [{"id": "nan", "text": "x", "metadata": {"score": NaN}}]}'  # Python's json reads NaN
    r = client.post(f"/v1/collections/{name}/documents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "documents[0].metadata: numbers must be finite" in r.json()["error"]["message"]
    body = '{"documents": [{"id": "git", "metadata": {"score": Infinity}}]}'
    r = client.patch(f"/v1/collections/{name}/documents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and "numbers must be finite" in r.json()["error"]["message"]
    assert [h["id"] for h in _search(client, name, query="commits", filter={"year": 2022})["hits"]] == ["git"]
    client.delete(f"/v1/collections/{name}")


def test_filter_operators_in_every_search_mode(client, collection):
    for mode in ("dense", "lexical", "hybrid"):
        query = "bees bread jupiter git marathon" if mode != "dense" else "anything"
        body = _search(client, collection, query=query, top_k=5, mode=mode, filter={"year": {"$gte": 2021}})
        assert {h["id"] for h in body["hits"]} == {"bread", "git", "marathon"} and body["filtered_count"] == 3
        body = _search(client, collection, query=query, top_k=5, mode=mode,
                       filter={"$or": [{"topic": {"$in": ["biology", "sports"]}}, {"year": 2022}]})
        assert {h["id"] for h in body["hits"]} == {"bees", "marathon", "git"}
        body = _search(client, collection, query=query, top_k=5, mode=mode,
                       filter={"topic": {"$nin": ["cooking", "sports"]}, "year": {"$lt": 2022}})
        assert {h["id"] for h in body["hits"]} == {"bees", "jupiter"}


def test_more_like_a_stored_document(client, collection):
    """`document_id` searches with the document's stored vector and leaves the document out."""
    vector = client.get(f"/v1/collections/{collection}/documents/jupiter", params={"include_vectors": True})
    by_vector = _search(client, collection, vector=vector.json()["vector"], top_k=5)["hits"]
    assert by_vector[0]["id"] == "jupiter"
    like = _search(client, collection, document_id="jupiter", top_k=4)
    assert [h["id"] for h in like["hits"]] == [h["id"] for h in by_vector[1:5]] and like["candidates"] == 4
    assert all(abs(a["score"] - b["score"]) < 1e-6 for a, b in zip(like["hits"], by_vector[1:5], strict=True))
    filtered = _search(client, collection, document_id="jupiter", top_k=5, filter={"year": 2020})
    assert [h["id"] for h in filtered["hits"]] == ["bees"]  # jupiter (2020) itself is left out
    r = client.post(f"/v1/collections/{collection}/search/batch",
                    json={"searches": [{"document_id": "jupiter", "top_k": 4}, {"query": "planets", "top_k": 1}]})
    assert [h["id"] for h in r.json()["results"][0]["hits"]] == [h["id"] for h in like["hits"]]
    for body, status, needle in [
        ({"document_id": "pluto"}, 404, "document_id: no document 'pluto'"),
        ({"document_id": "jupiter", "query": "x"}, 400, "exactly one of `query` (text), `vector` or `document_id`"),
        ({"document_id": "jupiter", "mode": "hybrid"}, 400, "needs `query` text, not a `document_id`"),
    ]:
        r = client.post(f"/v1/collections/{collection}/search", json=body)
        assert r.status_code == status and needle in r.json()["error"]["message"], r.text
    r = client.post(f"/v1/collections/{collection}/search/batch",
                    json={"searches": [{"query": "x"}, {"document_id": "pluto"}]})
    assert r.status_code == 404 and "searches[1].document_id" in r.json()["error"]["message"]


def test_delete_by_filter(client):
    name = _fresh_collection(client)
    r = client.request("DELETE", f"/v1/collections/{name}/documents", json={"filter": {"year": {"$lte": 2020}}})
    assert r.status_code == 200 and r.json()["deleted"] == 2
    info = client.get(f"/v1/collections/{name}").json()
    assert info["count"] == info["indexed"] == 3
    hits = _search(client, name, query="insects pollinate flowers", top_k=5)["hits"]
    assert {h["id"] for h in hits} == {"bread", "git", "marathon"}
    for body, needle in [({"filter": {}}, "filter: must hold at least one condition"),
                         ({}, "ids: send exactly one of `ids` or `filter`"),
                         ({"ids": ["git"], "filter": {"year": 2022}}, "ids: send exactly one"),
                         ({"filter": {"year": {"$gt": None}}}, "filter.year.$gt: must be a number or a string")]:
        r = client.request("DELETE", f"/v1/collections/{name}/documents", json=body)
        assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
    assert client.get(f"/v1/collections/{name}").json()["count"] == 3  # refused deletes removed nothing
    client.delete(f"/v1/collections/{name}")


def test_search_by_vector_and_raw_vector_documents(client):
    name = f"vec-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "dimension": 4, "model": "custom"}).status_code == 201
    docs = [{"id": f"v{i}", "vector": v, "metadata": {"i": i}}
            for i, v in enumerate(np.eye(4).tolist())]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    hits = _search(client, name, vector=[0.1, 0.9, 0.0, 0.0], top_k=2)["hits"]
    assert [h["id"] for h in hits] == ["v1", "v0"]
    r = client.post(f"/v1/collections/{name}/search", json={"query": "text needs the served model"})
    assert r.status_code == 400 and "send vectors" in r.json()["error"]["message"]
    client.delete(f"/v1/collections/{name}")


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/v1/collections/{c}/search", {"vector": [0.1, 0.2, 0.3]}, 400, "vector: expected dimension 384, got 3"),
    ("/v1/collections/{c}/search", {"query": "   "}, 400, "query: must be a non-empty string"),
    ("/v1/collections/{c}/search", {"query": "x", "top_k": 0}, 400, "top_k: must be between 1 and"),
    ("/v1/collections/{c}/search", {"query": "x", "top_k": 100000}, 400, "top_k"),
    ("/v1/collections/{c}/search", {}, 400, "exactly one of `query`"),
    ("/v1/collections/{c}/search", {"query": "x", "min_relevance": 2}, 422, "min_relevance"),
    ("/v1/collections/{c}/search", {"query": "x", "filter": {"a": [1]}}, 400,
     "filter.a: value must be a string, number, boolean or null"),
    ("/v1/collections/{c}/search", {"query": "x", "filter": {"year": {"$gt": "2020", "$like": 1}}}, 400,
     "filter.year.$like: unknown operator"),
    ("/v1/collections/nope-404/search", {"query": "x"}, 404, "'nope-404' does not exist"),
    ("/v1/collections", {"name": "../x"}, 400, "not a valid collection name"),
    ("/v1/collections", {"name": "ok", "metric": "hamming"}, 422, "metric"),
    ("/v1/collections/{c}/documents", {"documents": []}, 422, "documents"),
    ("/v1/collections/{c}/documents", {"documents": [{"id": "a", "text": ""}]}, 400, "documents[0]"),
    ("/v1/collections/{c}/documents", {"documents": [{"id": "a", "vector": [0.0] * 384}]}, 400, "zero vector"),
    ("/v1/collections/{c}/documents", {"documents": [{"id": "a", "vector": [1.0]}]}, 400,
     "documents[0].vector: expected dimension 384"),
    ("/v1/collections/{c}/documents", {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}, 400,
     "duplicate id"),
])
def test_bad_inputs_get_clear_4xx(client, collection, path, body, status, needle):
    r = client.post(path.format(c=collection), json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"]


def test_path_traversal_names_never_reach_the_disk(client, live_server):
    for name in ["..", "..%2F..%2Fetc", "%2E%2E"]:
        r = client.post(f"/v1/collections/{name}/search", json={"query": "x"})
        assert r.status_code in (400, 404), r.text
    assert not (live_server.data_dir / "etc").exists()


def test_lexical_and_hybrid_search_modes(client, collection):
    r = client.post(f"/v1/collections/{collection}/search",
                    json={"query": "yeast dough", "top_k": 3, "mode": "lexical"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["id"] for h in hits] == ["bread"]  # only documents holding a query term match
    assert hits[0]["lexical_score"] == hits[0]["score"] > 0 and hits[0]["relevance"] is None
    assert "embed" not in r.headers["server-timing"]  # nothing was embedded

    body = _search(client, collection, query="insects pollinate flowers", top_k=3, mode="hybrid")
    hits = body["hits"]
    assert hits[0]["id"] == "bees" and len(hits) == 3
    fused = [h["fused_score"] for h in hits]
    assert fused == sorted(fused, reverse=True) and hits[0]["lexical_score"] > 0
    dense = {h["id"]: h["score"] for h in _search(client, collection, query="insects pollinate flowers",
                                                  top_k=5)["hits"]}
    assert all(abs(h["score"] - dense[h["id"]]) < 1e-5 for h in hits)  # `score` stays the cosine
    filtered = _search(client, collection, query="planet of the solar system", top_k=5, mode="lexical",
                       filter={"topic": "astronomy"})
    assert [h["id"] for h in filtered["hits"]] == ["jupiter"] and filtered["filtered_count"] == 1


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"vector": [0.0] * 384, "mode": "lexical"}, 400, "mode: lexical search needs `query` text"),
    ({"vector": [0.1] * 384, "mode": "hybrid"}, 400, "mode: hybrid search needs `query` text"),
    ({"query": "x", "mode": "lexical", "min_relevance": 0.5}, 400, "min_relevance: lexical search has no"),
    ({"query": "x", "mode": "sparse"}, 422, "mode"),
])
def test_search_mode_errors(client, collection, body, status, needle):
    r = client.post(f"/v1/collections/{collection}/search", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_a_collection_with_an_english_stemmer(client):
    name = f"stem-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name, "lexical_stemmer": "porter"})
    assert r.status_code == 201 and r.json()["lexical_stemmer"] == "porter"
    docs = [{"id": i, "text": t, "metadata": m} for i, t, m in PASSAGES]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    hits = _search(client, name, query="pollinating flower", mode="lexical")["hits"]
    assert [h["id"] for h in hits] == ["bees"]  # pollinate/pollinating and flower/flowers share stems
    assert _search(client, name, query="committed", mode="lexical")["hits"][0]["id"] == "git"
    assert client.get(f"/v1/collections/{name}").json()["lexical_stemmer"] == "porter"
    r = client.post("/v1/collections", json={"name": f"stem-{uuid.uuid4().hex[:8]}", "lexical_stemmer": "klingon"})
    assert r.status_code == 422 and "lexical_stemmer" in r.json()["error"]["message"]
    client.delete(f"/v1/collections/{name}")


def test_lexical_search_on_a_collection_of_client_vectors(client):
    """BM25 reads the stored text, so a collection of another model's vectors is searchable by words."""
    name = f"vlex-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "dimension": 4, "model": "custom"}).status_code == 201
    docs = [{"id": i, "text": t, "vector": v} for (i, t, _), v in zip(PASSAGES[:4], np.eye(4).tolist(), strict=True)]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    hits = _search(client, name, query="commits history", mode="lexical")["hits"]
    assert [h["id"] for h in hits] == ["git"]
    client.delete(f"/v1/collections/{name}")


def test_metrics_export_each_collection(client):
    name = _fresh_collection(client)
    text = client.get("/metrics").text
    n = float(len(PASSAGES))
    for metric, value in (("up", 1.0), ("documents", n), ("vectors", n)):
        assert f'rrs_collection_{metric}{{collection="{name}"}} {value}' in text
    assert f'rrs_collection_unsnapshotted_writes{{collection="{name}"}}' in text
    client.delete(f"/v1/collections/{name}")
    assert f'collection="{name}"' not in client.get("/metrics").text
