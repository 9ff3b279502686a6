"""Reading documents back over a real server: one by id, by a list of ids, and page by page."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import numpy as np
import pytest

DOCS = [
    {"id": f"doc-{i:02d}", "text": f"Passage number {i} about {topic}.", "metadata": {"topic": topic, "n": i}}
    for i, topic in enumerate(["bees", "bread", "jupiter", "git", "bees", "marathon", "bread"])
]


@pytest.fixture(scope="module")
def collection(client) -> str:
    name = f"docs-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": DOCS[::-1]})
    assert r.status_code == 200, r.text
    yield name
    client.delete(f"/v1/collections/{name}")


def _pages(client, name: str, **params) -> list[list[dict]]:
    pages, after = [], None
    while True:
        query = {**params, **({"after": after} if after is not None else {})}
        r = client.get(f"/v1/collections/{name}/documents", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["data"])
        after = body["next_after"]
        if after is None:
            return pages
        assert after == body["data"][-1]["id"]


def test_pages_walk_every_document_once_in_id_order(client, collection):
    pages = _pages(client, collection, limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    got = [d for page in pages for d in page]
    assert [d["id"] for d in got] == sorted(d["id"] for d in DOCS)
    by_id = {d["id"]: d for d in DOCS}
    for d in got:
        assert (d["text"], d["metadata"]) == (by_id[d["id"]]["text"], by_id[d["id"]]["metadata"])
        assert d["vector"] is None and d["chunks"] is None  # vectors only when asked; short texts are whole
    # An exact multiple of the page size ends with next_after null, not with an empty page.
    assert [len(p) for p in _pages(client, collection, limit=7)] == [7]


def test_filtered_pages(client, collection):
    pages = _pages(client, collection, limit=1, filter=json.dumps({"topic": "bees"}))
    assert [d["id"] for page in pages for d in page] == ["doc-00", "doc-04"]
    r = client.get(f"/v1/collections/{collection}/documents", params={"filter": json.dumps({"n": 3})})
    assert [d["id"] for d in r.json()["data"]] == ["doc-03"]
    r = client.get(f"/v1/collections/{collection}/documents",
                   params={"filter": json.dumps({"n": {"$gte": 2, "$lt": 6}, "topic": {"$ne": "git"}})})
    assert [d["id"] for d in r.json()["data"]] == ["doc-02", "doc-04", "doc-05"]


def test_ids_lookup_keeps_the_order_asked_and_names_the_missing(client, collection):
    r = client.get(f"/v1/collections/{collection}/documents",
                   params={"ids": ["doc-05", "nope", "doc-01", "doc-05"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [d["id"] for d in body["data"]] == ["doc-05", "doc-01", "doc-05"]
    assert body["missing"] == ["nope"] and body["next_after"] is None


def test_get_one_document_by_an_id_with_slashes_and_spaces(client):
    name = f"docs-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    doc_id = "wiki/Space Needle?x=1#top"
    r = client.post(f"/v1/collections/{name}/documents",
                    json={"documents": [{"id": doc_id, "text": "A tower in Seattle.", "metadata": {"a": [1]}}]})
    assert r.status_code == 200
    r = client.get(f"/v1/collections/{name}/documents/{quote(doc_id, safe='')}")
    assert r.status_code == 200, r.text
    assert r.json() == {"id": doc_id, "text": "A tower in Seattle.", "metadata": {"a": [1]}, "vector": None,
                        "chunks": None}
    r = client.get(f"/v1/collections/{name}/documents/{quote('wiki/Other', safe='')}")
    assert r.status_code == 404 and "'wiki/Other'" in r.json()["error"]["message"]
    client.delete(f"/v1/collections/{name}")


def test_vectors_are_the_indexed_ones(client):
    """A client vector comes back normalised (cosine), and searching with it finds its document first."""
    name = f"vec-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "model": "custom", "dimension": 4}).status_code == 201
    vectors = {"a": [3.0, 0.0, 4.0, 0.0], "b": [0.0, 1.0, 0.0, 1.0]}
    docs = [{"id": k, "text": k, "vector": v} for k, v in vectors.items()]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    r = client.get(f"/v1/collections/{name}/documents/a", params={"include_vectors": "true"})
    np.testing.assert_allclose(r.json()["vector"], [0.6, 0.0, 0.8, 0.0], rtol=1e-6)
    page = client.get(f"/v1/collections/{name}/documents", params={"include_vectors": True}).json()["data"]
    for d in page:
        hits = client.post(f"/v1/collections/{name}/search", json={"vector": d["vector"], "top_k": 1}).json()["hits"]
        assert hits[0]["id"] == d["id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    client.delete(f"/v1/collections/{name}")


def test_a_chunked_document_lists_its_chunks(client):
    name = f"chunks-{uuid.uuid4().hex[:8]}"
    r = client.post("/v1/collections", json={"name": name, "chunk_tokens": 16, "chunk_overlap": 2})
    assert r.status_code == 201, r.text
    text = " ".join(f"Sentence {i} tells of a different town by the river." for i in range(8))
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "long", "text": text}]})
    assert r.status_code == 200
    info = client.get(f"/v1/collections/{name}").json()
    doc = client.get(f"/v1/collections/{name}/documents/long", params={"include_vectors": True}).json()
    chunks = doc["chunks"]
    assert len(chunks) == info["chunks"] + 1 >= 3
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert chunks[0]["start"] == 0 and chunks[-1]["end"] == len(text)
    assert all(a["end"] > b["start"] for a, b in zip(chunks, chunks[1:], strict=False))  # they overlap or touch
    assert chunks[0]["vector"] == doc["vector"]  # chunk 0 is the document's own vector
    last = chunks[-1]
    hits = client.post(f"/v1/collections/{name}/search", json={"vector": last["vector"], "top_k": 1}).json()["hits"]
    assert hits[0]["chunk"]["index"] == last["index"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    client.delete(f"/v1/collections/{name}")


def test_writes_between_pages_never_skip_or_repeat_a_document_that_stayed(client):
    name = f"live-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "model": "custom", "dimension": 2}).status_code == 201
    ids = [f"k{i:03d}" for i in range(0, 40, 2)]
    docs = [{"id": i, "vector": [1.0, float(n)]} for n, i in enumerate(ids)]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    seen, after = [], None
    while True:
        r = client.get(f"/v1/collections/{name}/documents", params={"limit": 4, **({"after": after} if after else {})})
        body = r.json()
        seen += [d["id"] for d in body["data"]]
        # Between pages: insert ids on both sides of the cursor, and delete one already read.
        n = len(seen)
        extra = [{"id": f"k{2 * n - 1:03d}", "vector": [0.0, 1.0]}, {"id": f"k{2 * n + 7:03d}", "vector": [0.0, 1.0]}]
        client.post(f"/v1/collections/{name}/documents", json={"documents": extra})
        client.request("DELETE", f"/v1/collections/{name}/documents", json={"ids": [seen[0]]})
        after = body["next_after"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    assert set(ids) <= set(seen)
    client.delete(f"/v1/collections/{name}")


@pytest.mark.parametrize(("params", "status", "needle"), [
    ({"limit": 0}, 400, "limit: must be between 1 and"),
    ({"limit": 10**6}, 400, "limit: must be between 1 and"),
    ({"filter": "{not json"}, 400, "filter: not valid JSON"),
    ({"filter": "[1, 2]"}, 400, "filter: must be a JSON object"),
    ({"filter": json.dumps({"bad key!": 1})}, 400, "filter: invalid field name"),
    ({"filter": json.dumps({"a": [1]})}, 400, "filter.a: value must be"),
    ({"ids": ["doc-01"], "after": "doc-00"}, 400, "ids: cannot be combined"),
    ({"limit": "many"}, 422, "limit"),
])
def test_bad_listing_parameters_are_named(client, collection, params, status, needle):
    r = client.get(f"/v1/collections/{collection}/documents", params=params)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_unknown_collection_is_a_404(client):
    for path in ("/v1/collections/absent/documents", "/v1/collections/absent/documents/x"):
        r = client.get(path)
        assert r.status_code == 404 and "absent" in r.json()["error"]["message"]


def test_metadata_patch_replaces_or_merges_without_re_embedding(client):
    name = f"patch-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    docs = [{"id": "a", "text": "Bees pollinate flowers.", "metadata": {"lang": "en", "year": 2020}},
            {"id": "b", "text": "Jupiter is a gas giant.", "metadata": {"lang": "en", "year": 2021}}]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    before = client.get(f"/v1/collections/{name}/documents/a", params={"include_vectors": True}).json()

    r = client.patch(f"/v1/collections/{name}/documents", json={"documents": [
        {"id": "a", "metadata": {"year": None, "tags": ["bio"]}}, {"id": "zzz", "metadata": {}}], "merge": True})
    assert r.status_code == 200, r.text
    assert (r.json()["updated"], r.json()["missing"]) == (1, ["zzz"])
    after = client.get(f"/v1/collections/{name}/documents/a", params={"include_vectors": True}).json()
    assert after["metadata"] == {"lang": "en", "tags": ["bio"]}  # merged; null removed `year`
    assert after["vector"] == before["vector"] and after["text"] == before["text"]
    assert client.get(f"/v1/collections/{name}/documents/zzz").status_code == 404  # not created

    r = client.patch(f"/v1/collections/{name}/documents", json={"documents": [{"id": "b", "metadata": {"x": 1}}]})
    assert r.json()["updated"] == 1
    assert client.get(f"/v1/collections/{name}/documents/b").json()["metadata"] == {"x": 1}  # replaced
    # Search and filters see the new metadata at once.
    hits = client.post(f"/v1/collections/{name}/search",
                       json={"query": "insects", "filter": {"tags": {"$contains": "bio"}}}).json()["hits"]
    assert [(h["id"], h["metadata"]) for h in hits] == [("a", {"lang": "en", "tags": ["bio"]})]
    info = client.get(f"/v1/collections/{name}").json()
    assert info["count"] == info["indexed"] == 2

    r = client.patch(f"/v1/collections/{name}/documents",
                     json={"documents": [{"id": "a", "metadata": {}}, {"id": "a", "metadata": {}}]})
    assert r.status_code == 400 and "documents[1].id: duplicate id" in r.json()["error"]["message"]
    r = client.patch(f"/v1/collections/{name}/documents", json={"documents": [{"id": "a"}]})
    assert r.status_code == 422 and "metadata" in r.json()["error"]["message"]
    client.delete(f"/v1/collections/{name}")


def _embedded_tokens(client) -> float:
    """Tokens the server's embedding batchers have run through the model so far (all lanes)."""
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("rrs_tokens_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


LONG = " ".join(f"Sentence {i} tells of a different town by the river, its bridges and its mills." for i in range(40))


def test_an_unchanged_text_keeps_its_stored_vectors(client):
    """Re-upserting the same text embeds nothing (the model sees no token); changed text is embedded."""
    name = f"reuse-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "chunk_tokens": 64}).status_code == 201
    docs = [{"id": "short", "text": "Bees pollinate flowers.", "metadata": {"v": 1}},
            {"id": "long", "text": LONG, "metadata": {"v": 1}}]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": docs})
    assert r.status_code == 200 and r.json()["unchanged"] == 0
    before = client.get(f"/v1/collections/{name}/documents", params={"include_vectors": True}).json()["data"]
    info_before = client.get(f"/v1/collections/{name}").json()
    assert info_before["chunks"] >= 2

    tokens = _embedded_tokens(client)
    again = [{**d, "metadata": {"v": 2}} for d in docs]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": again})
    assert r.status_code == 200 and r.json()["unchanged"] == 2
    assert _embedded_tokens(client) == tokens  # nothing went through the model
    after = client.get(f"/v1/collections/{name}/documents", params={"include_vectors": True}).json()["data"]
    for old, new in zip(before, after, strict=True):
        assert new["metadata"] == {"v": 2}  # metadata is still replaced
        assert new["vector"] == pytest.approx(old["vector"], abs=1e-6)
        assert [(c["start"], c["end"]) for c in new["chunks"] or []] == [(c["start"], c["end"])
                                                                          for c in old["chunks"] or []]
    info = client.get(f"/v1/collections/{name}").json()
    assert (info["count"], info["chunks"], info["indexed"]) == (2, info_before["chunks"], info_before["indexed"])
    hits = client.post(f"/v1/collections/{name}/search", json={"query": "Sentence 39 bridges", "top_k": 1}).json()
    assert hits["hits"][0]["id"] == "long" and hits["hits"][0]["chunk"]["index"] > 0

    r = client.post(f"/v1/collections/{name}/documents",
                    json={"documents": [{"id": "short", "text": "Bees pollinate flowers in spring."}]})
    assert r.json()["unchanged"] == 0 and _embedded_tokens(client) > tokens
    changed = client.get(f"/v1/collections/{name}/documents/short", params={"include_vectors": True}).json()
    assert changed["vector"] != pytest.approx(before[1]["vector"], abs=1e-3)  # ids sort: long, short
    client.delete(f"/v1/collections/{name}")


def test_reuse_keeps_the_truncation_report_and_never_reuses_client_vectors(client):
    name = f"reuse-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name, "chunk_tokens": 0}).status_code == 201
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "long", "text": LONG}]})
    assert r.json()["truncated"] == ["long"]
    r = client.post(f"/v1/collections/{name}/documents", json={"documents": [{"id": "long", "text": LONG}]})
    assert (r.json()["unchanged"], r.json()["truncated"]) == (1, ["long"])

    mine = np.random.default_rng(0).normal(size=384).astype(np.float32)
    r = client.post(f"/v1/collections/{name}/documents",
                    json={"documents": [{"id": "v", "text": "Bees pollinate flowers.", "vector": mine.tolist()}]})
    assert r.status_code == 200
    r = client.post(f"/v1/collections/{name}/documents",
                    json={"documents": [{"id": "v", "text": "Bees pollinate flowers."}]})
    assert r.json()["unchanged"] == 0  # the stored vector was the client's: the server embeds the text now
    served = client.post("/v1/embeddings", json={"input": "Bees pollinate flowers.", "input_type": "document"})
    stored = client.get(f"/v1/collections/{name}/documents/v", params={"include_vectors": True}).json()["vector"]
    assert stored == pytest.approx(served.json()["data"][0]["embedding"], abs=1e-5)
    client.delete(f"/v1/collections/{name}")
