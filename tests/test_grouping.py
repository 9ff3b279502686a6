"""Grouped search: the rules on their own, the collection against a brute-force reference, and HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from indexing.collection import Collection, CollectionConfig
from indexing.filter_plan import EXACT_FILTER_MAX
from indexing.grouping import GROUP_MAX_DEPTH, Grouping, group_depth, members, pick
from indexing.store import Document

DIM = 16


def test_pick_ranks_groups_by_their_best_member_and_caps_each():
    keys = {1: [("text", "a")], 2: [("text", "a")], 3: [("text", "b")], 4: [("text", "a")], 5: [("text", "c")],
            6: [("text", "b")], 7: []}
    chosen, complete = pick([7, 1, 2, 3, 4, 5, 6], keys, groups=2, size=2)
    assert [(g.value, g.vids) for g in chosen] == [("a", [1, 2]), ("b", [3, 6])] and complete
    chosen, complete = pick([1, 2, 3], keys, groups=2, size=2)
    assert [(g.value, g.vids) for g in chosen] == [("a", [1, 2]), ("b", [3])] and not complete
    assert not pick([1, 2], keys, groups=3, size=1)[1]


def test_pick_types_values_as_filters_do_and_arrays_join_each_group():
    keys = {1: [("number", 1)], 2: [("number", 1.0)], 3: [("bool", True)], 4: [("text", "1")],
            5: [("text", "x"), ("text", "y")]}
    chosen, _ = pick([1, 2, 3, 4, 5], keys, groups=10, size=5)
    assert [(g.key, g.vids) for g in chosen] == [
        (("number", 1), [1, 2]), (("bool", True), [3]), (("text", "1"), [4]), (("text", "x"), [5]),
        (("text", "y"), [5])]
    assert members(chosen) == [1, 2, 3, 4, 5]  # a document in two groups is one hit


def _reference(x: np.ndarray, q: np.ndarray, meta: list[dict[str, Any]], field: str, groups: int, size: int,
               allowed: set[int] | None = None, skip: frozenset[int] = frozenset()) -> list[tuple[Any, list[int]]]:
    """Brute-force ranking of every document, grouped by a plain reading of the rules."""
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    out: dict[Any, list[int]] = {}
    for i in np.argsort(-sims, kind="stable"):
        if (allowed is not None and i not in allowed) or i in skip or field not in meta[i]:
            continue
        value = meta[i][field]
        for v in dict.fromkeys(value if isinstance(value, list) else [value]):
            key = (type(v) is bool, v)  # True is not 1; 1 and 1.0 hash alike
            if key not in out and len(out) == groups:
                continue
            if len(out.setdefault(key, [])) < size:
                out[key].append(int(i))
    return [(key[1], vids) for key, vids in out.items()]


@pytest.fixture(scope="module", params=["unindexed", "indexed"])
def grouped(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[Collection, np.ndarray, list[dict[str, Any]]]:
    """One collection, without and with metadata indexes on the group field (the indexed one completes
    groups by a filtered search instead of deepening)."""
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    x[:1500] += 4 * np.eye(DIM, dtype=np.float32)[0]  # half the collection crowds one direction ...
    meta: list[dict[str, Any]] = []
    for i in range(n):
        source = "big" if i < 1500 else f"s{int(rng.integers(0, 40))}"
        m: dict[str, Any] = {"source": source, "lang": ["en", "de"][i % 2]}
        if i % 97 == 0:
            m["source"] = ["big", "mirror"]  # ... an array joins both groups
        if i % 89 == 0:
            del m["source"]  # absent: in no group
        if i % 101 == 0:
            m["source"] = 7 if i % 2 else 7.0  # one number group
        meta.append(m)
    indexes = ["source", "source[]"] if request.param == "indexed" else []
    coll = Collection.create(tmp_path_factory.mktemp("grouped") / "g", CollectionConfig("g", "m", DIM),
                             metadata_indexes=indexes)
    coll.upsert([Document(f"d{i}", "", meta[i]) for i in range(n)], x)
    return coll, x, meta


@pytest.mark.parametrize(("groups", "size"), [(1, 1), (5, 1), (4, 3), (8, 2), (30, 5)])
def test_grouped_dense_search_equals_brute_force(grouped, groups: int, size: int):
    coll, x, meta = grouped
    q = 4 * np.eye(DIM, dtype=np.float32)[0] + np.random.default_rng(groups).standard_normal(DIM).astype(np.float32)
    result = coll.search(q[None], groups, group=Grouping("source", size))[0]
    want = _reference(x, q, meta, "source", groups, size)
    assert result.groups == [(value, [f"d{i}" for i in vids]) for value, vids in want]
    assert [h.id for h in result.hits] == list(dict.fromkeys(f"d{i}" for _, vids in want for i in vids))
    sims = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
    assert np.allclose([h.score for h in result.hits], [sims[int(h.id[1:])] for h in result.hits], atol=1e-5)


def test_grouping_deepens_past_the_first_depth_for_rare_groups(grouped):
    coll, x, meta = grouped
    q = 8 * np.eye(DIM, dtype=np.float32)[0]  # the nearest ~1500 are nearly all "big"
    groups = 12
    assert group_depth(groups, 1) < 1500 < GROUP_MAX_DEPTH
    result = coll.search(q[None], groups, group=Grouping("source", 1))[0]
    want = _reference(x, q, meta, "source", groups, 1)
    assert len(want) == groups and result.groups == [(v, [f"d{i}" for i in vids]) for v, vids in want]


def test_an_indexed_field_completes_groups_without_deepening(grouped):
    coll, x, meta = grouped
    if not coll.metadata_indexes():
        pytest.skip("the unindexed collection deepens")
    depths: list[int] = []
    nearest = coll.nearest
    coll.nearest = lambda q, k, *a, **kw: depths.append(k) or nearest(q, k, *a, **kw)  # type: ignore[method-assign]
    try:
        q = x[2000] + 0.1
        result = coll.search(q[None], 5, group=Grouping("source", 4))[0]
    finally:
        del coll.nearest
    assert depths[0] == group_depth(5, 4) and max(depths) < 1500  # one opening search, one filtered one
    assert result.groups == [(v, [f"d{i}" for i in vids]) for v, vids in _reference(x, q, meta, "source", 5, 4)]


def test_large_short_groups_are_completed_one_search_each(grouped):
    coll, x, meta = grouped
    if not coll.metadata_indexes():
        pytest.skip("the unindexed collection deepens")
    q = 4 * np.eye(DIM, dtype=np.float32)[0] + x[2500]  # between "big" and the small sources
    want = _reference(x, q, meta, "source", 6, 5)
    coll.exact_filter_max = 64  # the groups hold more than this together: the per-group plan
    try:
        result = coll.search(q[None], 6, group=Grouping("source", 5))[0]
    finally:
        coll.exact_filter_max = EXACT_FILTER_MAX
    assert any(v == "big" for v, _ in want)  # a group of 1,500 documents among them
    assert result.groups == [(v, [f"d{i}" for i in vids]) for v, vids in want]


def test_grouping_with_a_filter_and_an_excluded_document(grouped):
    coll, x, meta = grouped
    q = x[1600]
    result = coll.search(q[None], 6, {"lang": "de"}, group=Grouping("source", 2), exclude=["d1601"])[0]
    allowed = {i for i in range(len(meta)) if meta[i]["lang"] == "de"}
    want = _reference(x, q, meta, "source", 6, 2, allowed, frozenset({1601}))
    assert result.groups == [(v, [f"d{i}" for i in vids]) for v, vids in want]


# ---- over HTTP: every mode, the batch, errors ----

PASSAGES = [
    ("p1", "Jupiter is the largest planet of the solar system.", {"site": "astro.example"}),
    ("p2", "Saturn's rings are made of ice and rock.", {"site": "astro.example"}),
    ("p3", "Mars looks red because of iron oxide dust on its surface.", {"site": "astro.example"}),
    ("p4", "The planets of the solar system orbit the Sun.", {"site": "school.example"}),
    ("p5", "A planet is a body that orbits a star and has cleared its orbit.", {"site": "dictionary.example"}),
    ("p6", "Bread dough rises because yeast produces carbon dioxide.", {"site": "food.example"}),
]


@pytest.fixture(scope="module")
def text_collection(client) -> str:
    name = f"groups-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    docs = [{"id": i, "text": t, "metadata": m} for i, t, m in PASSAGES]
    assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
    yield name
    client.delete(f"/v1/collections/{name}")


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_group_by_over_http_in_every_mode(client, text_collection, mode):
    url = f"/v1/collections/{text_collection}/search"
    body = {"query": "planets of the solar system", "top_k": 3, "mode": mode, "group_by": "site"}
    grouped = client.post(url, json={**body, "group_size": 2})
    assert grouped.status_code == 200, grouped.text
    answer = grouped.json()
    plain = client.post(url, json={"query": body["query"], "mode": mode, "top_k": 6}).json()
    order = [h["id"] for h in plain["hits"]]
    site = {i: m["site"] for i, _, m in PASSAGES}
    want: dict[str, list[str]] = {}
    for doc in order:  # the ungrouped ranking, grouped by hand
        if site[doc] in want or len(want) < 3:
            want.setdefault(site[doc], [])
            if len(want[site[doc]]) < 2:
                want[site[doc]].append(doc)
    assert [(g["value"], g["ids"]) for g in answer["groups"]] == list(want.items())
    assert [h["id"] for h in answer["hits"]] == [i for ids in want.values() for i in ids]
    assert plain["groups"] is None


def test_group_by_in_a_batch_equals_the_single_search(client, text_collection):
    url = f"/v1/collections/{text_collection}/search"
    searches = [{"query": "planets", "top_k": 2, "group_by": "site"}, {"query": "planets", "top_k": 2}]
    batch = client.post(f"{url}/batch", json={"searches": searches})
    assert batch.status_code == 200, batch.text
    for search, got in zip(searches, batch.json()["results"], strict=True):
        single = client.post(url, json=search).json()
        assert got["groups"] == single["groups"] and [h["id"] for h in got["hits"]] == [h["id"] for h in single["hits"]]


@pytest.mark.parametrize(("extra", "status", "needle"), [
    ({"group_by": "bad field!"}, 400, "group_by: invalid field name"),
    ({"group_by": "site", "group_size": 0}, 422, "group_size"),
    ({"group_by": "site", "group_size": 101}, 422, "group_size"),
    ({"group_by": "site", "rerank": {}}, 400, "group_by: not combined with `rerank`"),
])
def test_bad_grouping_is_named(client, text_collection, extra, status, needle):
    r = client.post(f"/v1/collections/{text_collection}/search", json={"query": "planets", **extra})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


# Hybrid grouping deepens: 60 sources of 3 passages, one on the query's topic and two far from it, so
# a source's other members rank below the first pass of both rankings (100 deep by default).
TOPICS = ["Bread dough rises because yeast makes carbon dioxide", "A violin has four strings tuned in fifths",
          "Glaciers carve valleys as they slowly move downhill", "Tax returns are due in the spring",
          "A marathon is a little over forty-two kilometres long"]
SCATTERED = [(f"s{s}-{m}", f"{'The planets orbit the Sun in ellipses' if m == 0 else TOPICS[(s + m) % 5]} "
              f"(note {s}.{m}).", {"source": f"src{s}"}) for s in range(60) for m in range(3)]


def test_hybrid_grouping_reads_deeper_until_its_groups_are_full(client):
    name = f"groups-deep-{uuid.uuid4().hex[:8]}"
    assert client.post("/v1/collections", json={"name": name}).status_code == 201
    try:
        docs = [{"id": i, "text": t, "metadata": m} for i, t, m in SCATTERED]
        assert client.post(f"/v1/collections/{name}/documents", json={"documents": docs}).status_code == 200
        url = f"/v1/collections/{name}/search"
        query = {"query": "do planets orbit the Sun", "mode": "hybrid", "min_relevance": 0}
        answer = client.post(url, json={**query, "top_k": 4, "group_by": "source", "group_size": 3})
        assert answer.status_code == 200, answer.text
        groups = answer.json()["groups"]
        assert len(groups) == 4 and all(len(g["ids"]) == 3 for g in groups)  # every member found
        # The same groups as grouping by hand the fused ranking of the whole collection (180 deep).
        whole = client.post(url, json={**query, "top_k": len(SCATTERED)}).json()
        want: dict[str, list[str]] = {}
        for hit in whole["hits"]:
            src = hit["metadata"]["source"]
            if src in want or len(want) < 4:
                want.setdefault(src, []).append(hit["id"])
        assert [(g["value"], g["ids"]) for g in groups] == list(want.items())
    finally:
        client.delete(f"/v1/collections/{name}")
