"""The metadata filter language: SQL on a real store against a plain-Python reading of the same rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexing.errors import InvalidDocument
from indexing.filters import filter_sql
from indexing.store import Document, DocumentStore

MISSING = object()
SCALARS = [None, True, False, 0, 1, 2, 2.5, -3, "x", "y", "2024-01-05", "2025-06-30", ""]
VALUES = [*SCALARS, [1, "x"], ["y", True], [], [None, 2.5], {"x": 1}]
FIELDS = ["a", "b", "n.x", "tags"]


def _get(meta: dict, field: str) -> Any:
    value: Any = meta
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return "text" if isinstance(v, str) else "other"


def _eq(v: Any, x: Any) -> bool:
    return v is not MISSING and _kind(v) == _kind(x) and v == x


def _holds(meta: dict, flt: dict) -> bool:
    """The reference: what the module docstring says, read literally."""
    for key, cond in flt.items():
        if key == "$and":
            ok = all(_holds(meta, f) for f in cond)
        elif key == "$or":
            ok = any(_holds(meta, f) for f in cond)
        else:
            v = _get(meta, key)
            ok = _eq(v, cond) if not isinstance(cond, dict) else all(_op(v, op, x) for op, x in cond.items())
        if not ok:
            return False
    return True


def _op(v: Any, op: str, x: Any) -> bool:
    if op == "$eq":
        return _eq(v, x)
    if op == "$ne":
        return not _eq(v, x)
    if op in ("$gt", "$gte", "$lt", "$lte"):
        if v is MISSING or _kind(v) != _kind(x):
            return False
        return {"$gt": v > x, "$gte": v >= x, "$lt": v < x, "$lte": v <= x}[op]
    if op == "$in":
        return any(_eq(v, e) for e in x)
    if op == "$nin":
        return not any(_eq(v, e) for e in x)
    if op == "$exists":
        return (v is not MISSING) is x
    if op == "$contains":
        return isinstance(v, list) and any(_eq(e, x) for e in v)
    raise AssertionError(op)


def _metas() -> list[dict]:
    rng = np.random.default_rng(7)
    metas = []
    for i in range(120):
        meta: dict[str, Any] = {}
        for field in FIELDS:
            if rng.random() < 0.75:
                value = VALUES[rng.integers(len(VALUES))]
                if field == "n.x":
                    meta.setdefault("n", {})["x"] = value
                else:
                    meta[field] = value
        if i % 17 == 0:
            meta["n"] = 5  # `n.x` then reaches into a number: missing
        metas.append(meta)
    return metas


@pytest.fixture(scope="module", params=["scan", "indexed"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[DocumentStore, list[dict]]:
    """The same documents without and with a metadata index on every field: the answers must not change."""
    metas = _metas()
    s = DocumentStore(Path(tmp_path_factory.mktemp("filters")) / "s.sqlite3", 2)
    if request.param == "indexed":  # before the writes: the indexes are then maintained by every upsert
        assert all(s.create_metadata_index(f) for f in FIELDS)
        assert all(s.create_metadata_index(f"{f}[]") for f in FIELDS)  # array indexes, for $contains
    s.upsert([Document(f"d{i:03d}", f"text {i}", m) for i, m in enumerate(metas)],
             np.ones((len(metas), 2), dtype=np.float32))
    return s, metas


def _run(store: DocumentStore, flt: dict) -> list[str]:
    return [d.id for d in store.page(1000, None, flt)]


scalar = st.sampled_from(SCALARS)
ordered = st.sampled_from([0, 1, 2, 2.5, -3, "x", "y", "2024-01-05", "2025-06-30"])
operator = st.one_of(
    st.tuples(st.sampled_from(["$eq", "$ne", "$contains"]), scalar),
    st.tuples(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), ordered),
    st.tuples(st.sampled_from(["$in", "$nin"]), st.lists(scalar, min_size=1, max_size=4)),
    st.tuples(st.just("$exists"), st.booleans()),
)
condition = st.one_of(scalar, st.dictionaries(st.sampled_from(["$eq"]), scalar, min_size=1),
                      st.lists(operator, min_size=1, max_size=3).map(dict))
leaf = st.dictionaries(st.sampled_from(FIELDS), condition, min_size=1, max_size=3)
filters = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda op, fs: {op: fs}, st.sampled_from(["$and", "$or"]), st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda a, b: {**a, **b}, leaf, st.builds(lambda fs: {"$or": fs}, st.lists(inner, min_size=1,
                                                                                              max_size=2))),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters)
def test_sql_matches_the_reference_on_random_filters(store, flt):
    s, metas = store
    expected = [f"d{i:03d}" for i, m in enumerate(metas) if _holds(m, flt)]
    assert _run(s, flt) == expected
    vids, count = s.vids_matching(flt)
    assert count == len(expected) and sorted(vids.tolist()) == sorted(d.vid for d in s.get_by_ids(expected))
    assert s.count_matching(flt) == len(expected)
    assert s.count_matching(flt, limit=5) == min(5, len(expected))
    assert s.vids_matching(flt, limit=5)[1] == min(5, len(expected))
    # A post-filtered search checks only its candidates: every third document here, and one unknown id.
    candidates = [d.vid for d in s.get_by_ids([f"d{i:03d}" for i in range(0, len(metas), 3)])] + [987654321]
    passing = {d.vid for d in s.get_by_ids(expected)} & set(candidates)
    assert sorted(s.documents_passing(flt, candidates).tolist()) == sorted(passing)
    assert sorted(s.documents_passing(flt, candidates, per_row=False).tolist()) == sorted(passing)


@pytest.mark.parametrize(("flt", "check"), [
    ({"a": 1}, lambda v: _kind(v) == "number" and v == 1),  # true is not 1
    ({"a": True}, lambda v: v is True),
    ({"a": {"$gte": "2024-01-01", "$lt": "2025-01-01"}}, lambda v: v == "2024-01-05"),
    ({"a": {"$ne": "x"}}, lambda v: v != "x" or v is MISSING),  # absent fields count as not equal
    ({"a": {"$exists": False}}, lambda v: v is MISSING),
    ({"a": None}, lambda v: v is None),  # null is present; missing is not null
    ({"tags": {"$contains": "x"}}, lambda v: isinstance(v, list) and "x" in v),
    ({"a": {"$contains": 1}}, lambda v: isinstance(v, list) and any(_eq(e, 1) for e in v)),  # not true
    ({"b": {"$contains": True}}, lambda v: isinstance(v, list) and any(e is True for e in v)),  # not 1
    ({"a": {"$contains": None}}, lambda v: isinstance(v, list) and None in v),
])
def test_named_cases(store, flt, check):
    s, metas = store
    field = next(iter(flt))
    expected = [f"d{i:03d}" for i, m in enumerate(metas) if check(_get(m, field))]
    assert expected and _run(s, flt) == expected


@pytest.mark.parametrize(("flt", "needle"), [
    ({"a": {"$regex": "x"}}, "filter.a.$regex: unknown operator"),
    ({"$not": {"a": 1}}, "filter: unknown operator '$not'"),
    ({"a": {}}, "filter.a: an operator object needs at least one of"),
    ({"a": {"$gt": True}}, "filter.a.$gt: must be a number or a string"),
    ({"a": {"$gt": None}}, "filter.a.$gt: must be a number or a string"),
    ({"a": {"$in": []}}, "filter.a.$in: must be a list of 1 to 1024 values"),
    ({"a": {"$in": "x"}}, "filter.a.$in: must be a list"),
    ({"a": {"$in": [1, [2]]}}, "filter.a.$in[1]: value must be a string, number, boolean or null"),
    ({"a": {"$exists": 1}}, "filter.a.$exists: must be true or false"),
    ({"a": [1]}, "filter.a: value must be a string, number, boolean or null"),
    ({"$or": []}, "filter.$or: must be a list of 1 to 1024 filters"),
    ({"$or": [{"a": 1}, 3]}, "filter.$or[1]: must be an object"),
    ({"$and": [{"b": {"$lt": [1]}}]}, "filter.$and[0].b.$lt: must be a number or a string"),
    ({"bad key": 1}, "filter: invalid field name 'bad key'"),
    ({"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"$or": [{"a": 1}]}]}]}]}]}]}]}]}]},
     "nested deeper than 8"),
])
def test_bad_filters_name_the_place(flt, needle):
    with pytest.raises(InvalidDocument, match=None) as info:
        filter_sql(flt)
    assert needle in str(info.value)


def test_values_are_parameters_never_sql(store):
    s, _ = store
    assert _run(s, {"a": "x' OR 1=1 --"}) == []
    where, params = filter_sql({"a": {"$in": ["'; DROP TABLE documents; --"]}})
    assert "DROP" not in where and "'; DROP TABLE documents; --" in params


def test_integers_beyond_64_bits_compare_instead_of_failing(tmp_path: Path):
    s = DocumentStore(tmp_path / "big.sqlite3", 2)
    s.upsert([Document("big", "t", {"n": 2**70}), Document("small", "t", {"n": 5})], np.ones((2, 2), np.float32))
    assert _run(s, {"n": 2**70}) == ["big"]
    assert _run(s, {"n": {"$gt": 2**64}}) == ["big"] and _run(s, {"n": {"$lt": -(2**70)}}) == []
    assert _run(s, {"n": {"$in": [5, 2**80]}}) == ["small"]
    s.close()


@pytest.mark.parametrize("flt", [
    {"a": "x"}, {"a": 2}, {"a": True}, {"a": None}, {"n.x": {"$gte": 1}}, {"a": {"$in": ["x", 2]}},
    {"$or": [{"a": "x"}, {"b": {"$lt": 0}}]},
])
def test_indexed_fields_are_read_through_their_index(tmp_path: Path, flt):
    """The planner only uses an expression index for the very expression the filter writes."""
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)
    for field in ("a", "b", "n.x"):
        s.create_metadata_index(field)
    where, params = filter_sql(flt)
    plan = " ".join(r[3] for r in s._conn.execute(f"EXPLAIN QUERY PLAN SELECT vid FROM documents WHERE {where}",
                                                  params))
    assert "USING INDEX meta:" in plan and "SCAN documents" not in plan
    s.close()


@pytest.mark.parametrize("flt", [
    {"a": {"$ne": "x"}}, {"a": {"$nin": [1, "x", None]}}, {"a": {"$exists": False}}, {"a": {"$exists": True}},
    {"a": {"$ne": 2}, "b": "x"}, {"$or": [{"a": {"$ne": True}}, {"b": {"$exists": False}}]},
])
def test_negations_of_indexed_fields_read_no_row(tmp_path: Path, flt):
    """Finding a negation's matches reads the excluded documents from the index and the rest from the
    smallest index: no row's metadata. Testing given rows reads those rows' metadata."""
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)
    metas = [{"a": v, "b": "x"} for v in ("x", 2, True, None, {"o": 1}, [1])] + [{}, {"b": "y"}]
    s.upsert([Document(f"d{i}", "t", m) for i, m in enumerate(metas)], np.ones((len(metas), 2), np.float32))
    plain = sorted(d.id for d in s.page(100, None, flt))  # before the indexes: every row's metadata
    for field in ("a", "b"):
        s.create_metadata_index(field)
    where, params = s._filter(flt)
    plan = [r[3] for r in s._conn.execute(f"EXPLAIN QUERY PLAN SELECT vid FROM documents WHERE {where}", params)]
    assert all(step.startswith(("SEARCH", "LIST", "MULTI-INDEX", "INDEX", "COMPOUND", "LEFT-MOST", "SCAN documents "
                                "USING COVERING INDEX")) for step in plan), plan
    assert "USING INDEX meta:a" in " ".join(plan)
    assert sorted(d.id for d in s.page(100, None, flt)) == plain and len(plain) > 0
    where, _ = s._filter(flt, per_row=True)
    assert "NOT IN" not in where and "vid IN" not in where  # a candidate's own row is the cheap test
    s.close()


def test_a_read_that_stops_early_lists_only_a_few_excluded_documents(tmp_path: Path):
    """Listing what a negation excludes costs every excluded document before the first row is read: a
    read that stops at a limit does it only when they are fewer than the limit."""
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)
    metas = [{"lang": "en" if i % 2 else "de", "tenant": f"t{i % 50}", **({"rare": 1} if i % 100 == 0 else {})}
             for i in range(400)]
    s.upsert([Document(f"d{i}", "t", m) for i, m in enumerate(metas)], np.ones((len(metas), 2), np.float32))
    s.create_metadata_index("lang")
    s.create_metadata_index("tenant")
    s.create_metadata_index("rare")
    for flt, listed in (({"tenant": {"$ne": "t3"}}, True), ({"lang": {"$ne": "en"}}, False),
                        ({"rare": {"$exists": False}}, True), ({"tenant": {"$exists": False}}, False),
                        ({"rare": {"$exists": True}}, True), ({"tenant": {"$exists": True}}, False),
                        ({"lang": {"$nin": ["en", "fr"]}}, False)):
        # excluded (or present): t3 8 documents, rare 4; en 200, tenant 400
        where, params = s._limited_filter(flt, 64, *s._filter_indexes())
        assert ("NOT IN" in where or "vid IN" in where) is listed, flt
        expected = sorted(d.vid for d in s.page(1000, None, flt))
        got, count = s.vids_matching(flt, limit=64)
        assert count == min(64, len(expected)) and set(got.tolist()) <= set(expected)
        assert sorted(s.vids_matching(flt)[0].tolist()) == expected and "IN (SELECT vid" in s._filter(flt)[0]
    s.close()


def test_a_lone_indexed_contains_reads_the_array_index_alone(tmp_path: Path):
    s = DocumentStore(tmp_path / "arr.sqlite3", 2)
    metas = [{"tags": ["x", "x", 1]}, {"tags": ["y"]}, {"tags": "x"}, {"tags": [True, "x"]}, {}]
    s.upsert([Document(f"d{i}", "t", m) for i, m in enumerate(metas)], np.ones((len(metas), 2), np.float32))
    s.create_metadata_index("tags[]")
    for flt, want in (({"tags": {"$contains": "x"}}, ["d0", "d3"]), ({"tags": {"$contains": 1}}, ["d0"]),
                      ({"tags": {"$contains": True}}, ["d3"]), ({"tags": {"$contains": "z"}}, [])):
        rows, params = s._matching_rows(flt, None)
        plan = " ".join(r[3] for r in s._conn.execute(f"EXPLAIN QUERY PLAN {rows}", params))
        assert "documents" not in plan and "array_values_elements" in plan  # no lookup per match
        vids, count = s.vids_matching(flt)
        assert count == len(want) == s.count_matching(flt)  # d0 holds "x" twice: counted once
        assert sorted(vids.tolist()) == sorted(d.vid for d in s.get_by_ids(want))
        assert s.count_matching(flt, limit=1) == min(1, len(want))
    s.delete(["d0"])  # the triggers drop its elements with it
    assert s.count_matching({"tags": {"$contains": "x"}}) == 1
    with pytest.raises(InvalidDocument, match="filter.tags.\\$contains: value must be"):
        s.vids_matching({"tags": {"$contains": ["x"]}})
    s.close()


def test_metadata_indexes_are_read_back_and_dropped(tmp_path: Path):
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)
    assert s.create_metadata_index("year") and s.create_metadata_index("a.b-c")
    assert not s.create_metadata_index("year")  # already there: nothing to do
    s.close()
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)  # the schema is the record: nothing else is kept
    assert s.metadata_indexes() == ["a.b-c", "year"]
    assert s.drop_metadata_index("year") and not s.drop_metadata_index("year")
    assert s.metadata_indexes() == ["a.b-c"]
    with pytest.raises(InvalidDocument, match="field: invalid field name"):
        s.create_metadata_index("x'); DROP TABLE documents; --")
    s.close()


def test_a_composite_index_serves_an_equality_and_a_range_together(tmp_path: Path):
    s = DocumentStore(tmp_path / "ix.sqlite3", 2)
    docs = [Document(f"d{i}", "t", {"lang": ["en", "de"][i % 2], "year": 2000 + i % 30}) for i in range(600)]
    s.upsert(docs, np.ones((len(docs), 2), np.float32))
    assert s.create_metadata_index("lang") and s.create_metadata_index("lang+year")
    assert s.metadata_indexes() == ["lang", "lang+year"]
    flt = {"lang": "en", "year": {"$gte": 2025}}
    where, params = filter_sql(flt)
    plan = s._conn.execute(f"EXPLAIN QUERY PLAN SELECT vid FROM documents WHERE {where}", params).fetchall()
    assert "meta:lang+year" in plan[0][3] and ">?" in plan[0][3]  # both conditions read from the index
    want = sorted(d.vid for d in docs if d.metadata["lang"] == "en" and d.metadata["year"] >= 2025)
    assert sorted(s.vids_matching(flt)[0].tolist()) == want
    for bad in ("lang+lang", "a+b+c+d+e", "lang+", "x y"):
        with pytest.raises(InvalidDocument, match="field"):
            s.create_metadata_index(bad)
    assert s.drop_metadata_index("lang+year") and s.metadata_indexes() == ["lang"]
    s.close()


def test_an_array_index_follows_every_write(tmp_path: Path):
    """Replacing upserts, metadata PATCHes and deletes keep the array rows equal to the documents."""
    s = DocumentStore(tmp_path / "arr.sqlite3", 2)
    rng = np.random.default_rng(11)

    def tags() -> list:
        return [str(t) for t in rng.choice(["x", "y", "z", "w"], int(rng.integers(0, 4)), replace=False)]

    metas = {f"d{i}": {"tags": tags()} for i in range(60)}
    s.upsert([Document(i, "t", m) for i, m in metas.items()], np.ones((60, 2), np.float32))
    assert s.create_metadata_index("tags[]")  # backfilled from the stored documents
    for i in range(0, 60, 3):  # replace
        metas[f"d{i}"] = {"tags": tags()}
    s.upsert([Document(f"d{i}", "t2", metas[f"d{i}"]) for i in range(0, 60, 3)], np.ones((20, 2), np.float32))
    for i in range(1, 60, 5):  # patch: a scalar, then nothing
        metas[f"d{i}"] = {"tags": "x"} if i % 2 else {}
    s.update_metadata([(f"d{i}", metas[f"d{i}"]) for i in range(1, 60, 5)])
    gone = [f"d{i}" for i in range(2, 60, 7)]
    s.delete(gone)
    for doc_id in gone:
        metas.pop(doc_id)
    for tag in ("x", "y", "z", "w"):
        want = sorted(i for i, m in metas.items() if isinstance(m.get("tags"), list) and tag in m["tags"])
        assert sorted(d.id for d in s.page(1000, None, {"tags": {"$contains": tag}})) == want
    (rows,) = s._conn.execute("SELECT COUNT(*) FROM array_values").fetchone()
    assert rows == sum(len(m["tags"]) for m in metas.values() if isinstance(m.get("tags"), list))
    assert s.drop_metadata_index("tags[]")
    assert s._conn.execute("SELECT COUNT(*) FROM array_values").fetchone() == (0,)
    assert s.metadata_indexes() == []
    s.close()


def _facet_reference(metas: list[dict], field: str, flt: dict) -> dict[tuple[str, Any], int]:
    """Typed value -> documents holding it, read literally from the facets module docstring."""
    counts: dict[tuple[str, Any], int] = {}
    for meta in metas:
        v = _get(meta, field)
        if not _holds(meta, flt) or v is MISSING or isinstance(v, dict):
            continue
        held = {(_kind(e), e) for e in v if _kind(e) != "other"} if isinstance(v, list) else {(_kind(v), v)}
        for key in held:
            counts[key] = counts.get(key, 0) + 1
    return counts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters, field=st.sampled_from(FIELDS))
def test_facets_match_the_reference(store, flt, field):
    s, metas = store
    want = _facet_reference(metas, field, flt)
    values, distinct = s.facets(field, flt, 1000)
    got = {(_kind(f.value), f.value): f.count for f in values}
    assert got == want and distinct == len(want)
    counts = [f.count for f in values]
    assert counts == sorted(counts, reverse=True)
    top, _ = s.facets(field, flt, 2)
    assert [f.count for f in top] == counts[:2]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters, field=st.sampled_from(FIELDS))
def test_facets_match_the_reference_when_no_filter_counts_as_few(store, flt, field, monkeypatch):
    import indexing.store as store_module

    monkeypatch.setattr(store_module, "FEW_MATCHES", 0)  # the array index is walked, not driven by the matches
    s, metas = store
    values, distinct = s.facets(field, flt, 1000)
    assert {(_kind(f.value), f.value): f.count for f in values} == _facet_reference(metas, field, flt)


def test_facets_keep_types_apart(tmp_path: Path):
    s = DocumentStore(tmp_path / "s.sqlite3", 2)
    metas = [{"v": 1}, {"v": 1.0}, {"v": True}, {"v": "1"}, {"v": None}, {"v": [1, 1.0, True]}, {"w": 1},
             {"v": {"x": 1}}]
    s.upsert([Document(f"d{i}", "t", m) for i, m in enumerate(metas)], np.ones((len(metas), 2), dtype=np.float32))
    values, distinct = s.facets("v", None, 10)
    got = {(_kind(f.value), f.value): f.count for f in values}
    assert got == {("number", 1): 3, ("bool", True): 2, ("text", "1"): 1, ("null", None): 1} and distinct == 4
    assert values[0].count == 3 and values[1].count == 2  # most frequent first


def test_testing_candidates_probes_each_ones_array_elements(tmp_path: Path):
    """A post-filter tests a search's candidates: an indexed `$contains` then looks each candidate up
    (one index probe of value and vid), not the list of every document holding the value, which for a
    tag most documents carry would be most of the table on every test."""
    s = DocumentStore(tmp_path / "s.sqlite3", 2)
    assert s.create_metadata_index("tags[]")
    s.upsert([Document(f"d{i}", "t", {"tags": ["common"] + (["rare"] if i % 50 == 0 else [])}) for i in range(500)],
             np.ones((500, 2), np.float32))
    flt = {"tags": {"$contains": "common"}}
    candidates = [d.vid for d in s.get_by_ids([f"d{i}" for i in range(0, 500, 7)])]

    def plan(per_row: bool) -> str:
        where, params = s._filter(flt, per_row=per_row)
        sql = (f"EXPLAIN QUERY PLAN SELECT vid FROM json_each(?) AS candidate CROSS JOIN documents "
               f"ON documents.vid = candidate.value WHERE {where}")
        return " | ".join(row[-1] for row in s._conn.execute(sql, [json.dumps(candidates), *params]))

    assert "CORRELATED" in plan(True) and "LIST SUBQUERY" not in plan(True)
    assert "LIST SUBQUERY" in plan(False)  # finding matches: the value's index entries list them
    assert len(s.documents_passing(flt, candidates)) == len(candidates)
    assert sorted(s.documents_passing({"tags": {"$contains": "rare"}}, candidates).tolist()) == sorted(
        d.vid for d in s.get_by_ids([f"d{i}" for i in range(0, 500, 7) if i % 50 == 0]))


def test_a_read_that_stops_early_probes_rows_for_a_value_most_documents_hold(tmp_path: Path):
    """Reading the first `limit` matches: a `$contains` of a value held by more than sqrt(limit * n)
    documents becomes a per-row probe of a scan that stops at the limit; a rarer value, or one beside
    a condition no index serves, keeps the list of its holders."""
    s = DocumentStore(tmp_path / "s.sqlite3", 2)
    assert s.create_metadata_index("tags[]") and s.create_metadata_index("lang")
    s.upsert([Document(f"d{i}", "t", {"tags": ["common"] + (["rare"] if i % 50 == 0 else []), "lang": "de"})
              for i in range(400)], np.ones((400, 2), np.float32))  # sqrt(16 * 400) = 80 holders decide

    def plan(flt: dict) -> str:
        where, params = s._limited_filter(flt, 16, *s._filter_indexes())
        sql = f"EXPLAIN QUERY PLAN SELECT vid FROM documents WHERE {where} LIMIT 16"
        return " | ".join(row[-1] for row in s._conn.execute(sql, params))

    common, rare = {"tags": {"$contains": "common"}}, {"tags": {"$contains": "rare"}}
    assert "CORRELATED" in plan(common) and "LIST SUBQUERY" in plan(rare)
    assert "CORRELATED" in plan({"$and": [common, {"lang": "de"}]})  # an indexed equality beside it
    assert "LIST SUBQUERY" in plan({"$and": [common, {"lang": {"$ne": "fr"}}]})  # $ne reads every row
    assert "LIST SUBQUERY" in plan({"$and": [common, {"year": 2020}]})  # no index on year
    for flt in (common, rare, {"$or": [rare, {"lang": "de"}]}):
        assert s.vids_matching(flt, limit=16)[1] == min(16, s.count_matching(flt))
    assert s.count_matching(common, limit=16) == 16 and s.count_matching(rare, limit=16) == 8


@pytest.mark.parametrize(("flt", "served"), [
    ({"a": 1, "b": {"$gte": 2, "$lt": 5}}, True),
    ({"$or": [{"a": {"$in": [1, 2]}}, {"tags": {"$contains": "x"}}]}, True),
    ({"a": {"$ne": 1}}, True),  # the index lists the documents a negation excludes
    ({"a": {"$exists": True}, "b": {"$nin": [1, 2]}}, True),
    ({"c": {"$ne": 1}}, False),
    ({"c": 1}, False),
    ({"a": {"$contains": 1}}, False),  # `a` has a metadata index, not an array index
    ({"$and": [{"a": 1}, {"$or": [{"b": 1}, {"c": 2}]}]}, False),
])
def test_which_filters_read_indexes_alone(flt: dict, served: bool):
    from indexing.filters import served_by_indexes

    assert served_by_indexes(flt, frozenset({"a", "b"}), frozenset({"tags"})) is served
