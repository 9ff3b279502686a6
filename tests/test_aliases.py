"""Collection aliases over a real server, and the alias table across restarts."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from indexing.aliases import ALIASES_FILE, AliasError
from indexing.catalog import CollectionCatalog
from indexing.collection import CollectionConfig
from indexing.errors import CollectionExists, CollectionNotFound, InvalidDocument
from indexing.store import Document

DIM = 4


@pytest.fixture()
def names(client):
    tag = uuid.uuid4().hex[:6]
    made = {"v1": f"docs-v1-{tag}", "v2": f"docs-v2-{tag}", "alias": f"docs-{tag}"}
    for key in ("v1", "v2"):
        r = client.post("/v1/collections", json={"name": made[key], "model": "vectors", "dimension": DIM})
        assert r.status_code == 201, r.text
        docs = [{"id": f"{key}-{i}", "vector": [1.0, float(i), 0.5, 0.0]} for i in range(3)]
        assert client.post(f"/v1/collections/{made[key]}/documents", json={"documents": docs}).status_code == 200
    yield made
    client.delete(f"/v1/aliases/{made['alias']}")
    for key in ("v1", "v2"):
        client.delete(f"/v1/collections/{made[key]}")


def _search(client, name: str) -> dict:
    r = client.post(f"/v1/collections/{name}/search", json={"vector": [1, 0, 0, 0], "top_k": 3})
    assert r.status_code == 200, r.text
    return r.json()


def test_an_alias_serves_its_collection_and_moves_in_one_step(client, names):
    v1, v2, alias = names["v1"], names["v2"], names["alias"]
    r = client.put(f"/v1/aliases/{alias}", json={"collection": v1})
    assert r.status_code == 200 and r.json() == {"alias": alias, "collection": v1, "previous": None}
    body = _search(client, alias)
    assert body["collection"] == v1 and {h["id"] for h in body["hits"]} == {"v1-0", "v1-1", "v1-2"}
    info = client.get(f"/v1/collections/{alias}").json()
    assert info["name"] == v1 and info["aliases"] == [alias]

    r = client.put(f"/v1/aliases/{alias}", json={"collection": v2})
    assert r.status_code == 200 and r.json()["previous"] == v1
    body = _search(client, alias)
    assert body["collection"] == v2 and {h["id"] for h in body["hits"]} == {"v2-0", "v2-1", "v2-2"}
    assert {"alias": alias, "collection": v2, "previous": None} in client.get("/v1/aliases").json()["data"]
    assert client.get(f"/v1/collections/{v1}").json()["aliases"] == []

    # Writes, listing and batch search through the alias reach the target and say so.
    r = client.post(f"/v1/collections/{alias}/documents", json={"documents": [{"id": "new", "vector": [0, 1, 0, 0]}]})
    assert r.status_code == 200 and r.json()["collection"] == v2
    assert client.get(f"/v1/collections/{v2}/documents/new").status_code == 200
    r = client.post(f"/v1/collections/{alias}/search/batch", json={"searches": [{"vector": [0, 1, 0, 0], "top_k": 1}]})
    assert r.json()["collection"] == v2 and r.json()["results"][0]["hits"][0]["id"] == "new"

    # A collection an alias points at cannot be deleted, nor can the alias's name delete it.
    r = client.delete(f"/v1/collections/{v2}")
    assert r.status_code == 409 and alias in r.json()["error"]["message"]
    r = client.delete(f"/v1/collections/{alias}")
    assert r.status_code == 409 and f"DELETE /v1/aliases/{alias}" in r.json()["error"]["message"]
    assert client.delete(f"/v1/collections/{v1}").status_code == 204  # no alias on it any more
    assert client.delete(f"/v1/aliases/{alias}").status_code == 204
    assert client.post(f"/v1/collections/{alias}/search", json={"vector": [1, 0, 0, 0]}).status_code == 404
    assert client.delete(f"/v1/collections/{v2}").status_code == 204


def test_alias_errors_name_the_reason(client, names):
    v1, v2, alias = names["v1"], names["v2"], names["alias"]
    r = client.put(f"/v1/aliases/{v1}", json={"collection": v2})
    assert r.status_code == 409 and "is a collection's name" in r.text
    r = client.put(f"/v1/aliases/{alias}", json={"collection": "no-such-collection"})
    assert r.status_code == 404 and "no-such-collection" in r.text
    assert client.put(f"/v1/aliases/{alias}", json={"collection": v1}).status_code == 200
    r = client.put(f"/v1/aliases/{alias}-2", json={"collection": alias})
    assert r.status_code == 400 and "is an alias" in r.text
    r = client.put("/v1/aliases/bad%20name", json={"collection": v1})
    assert r.status_code == 400 and "bad name" in r.text
    r = client.post("/v1/collections", json={"name": alias, "model": "vectors", "dimension": DIM})
    assert r.status_code == 409 and "is an alias" in r.text
    assert client.delete("/v1/aliases/never-made").status_code == 404
    assert client.put(f"/v1/aliases/{alias}", json={}).status_code in (400, 422)


def test_aliases_survive_a_restart_and_a_corrupt_table_is_refused(tmp_path: Path):
    cat = CollectionCatalog(tmp_path)
    for name in ("a1", "a2"):
        coll = cat.create(CollectionConfig(name, "m", DIM))
        coll.upsert([Document(f"{name}-doc", "t")], np.ones((1, DIM), np.float32))
    assert cat.point_alias("live", "a1") is None
    assert cat.point_alias("live", "a2") == "a1"
    with pytest.raises(CollectionExists):
        cat.point_alias("a1", "a2")
    with pytest.raises(CollectionNotFound):
        cat.point_alias("x", "a3")
    with pytest.raises(InvalidDocument):
        cat.point_alias("y", "live")
    cat.close()

    cat = CollectionCatalog(tmp_path)
    cat.open_all()
    assert cat.aliases.items() == {"live": "a2"} and cat.get("live").name == "a2"
    assert cat.describe("a2")["aliases"] == ["live"]
    cat.close()

    (tmp_path / "collections" / ALIASES_FILE).write_text('{"live": 3}')
    with pytest.raises(AliasError, match="not an object of alias: collection names"):
        CollectionCatalog(tmp_path)
    (tmp_path / "collections" / ALIASES_FILE).write_text("{trunc")
    with pytest.raises(AliasError, match="unreadable"):
        CollectionCatalog(tmp_path)
