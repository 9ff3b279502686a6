"""Collections on disk: snapshots, manifest, crash recovery, corruption isolation, names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.catalog import CollectionCatalog
from indexing.collection import Collection, CollectionConfig, validate_name
from indexing.errors import (
    CollectionExists,
    CollectionNotFound,
    CollectionUnavailable,
    InvalidCollectionName,
    InvalidDocument,
)
from indexing.snapshot import read_manifest, update_manifest
from indexing.store import Chunk, ChunkRef, Document

DIM = 8


def _docs(n: int, start: int = 0, **meta) -> tuple[list[Document], np.ndarray]:
    rng = np.random.default_rng(start)
    docs = [Document(f"d{i}", f"text {i}", {"i": i, **meta}) for i in range(start, start + n)]
    return docs, rng.normal(size=(n, DIM)).astype(np.float32)


@pytest.fixture
def catalog(tmp_path: Path) -> CollectionCatalog:
    cat = CollectionCatalog(tmp_path, snapshot_every=10_000)
    yield cat
    cat.close()


@pytest.mark.parametrize("bad", ["../x", "..", "a/b", "", "-x", ".hidden", "x" * 65, "a b", "é"])
def test_invalid_names_are_rejected(bad: str):
    with pytest.raises(InvalidCollectionName, match="not a valid collection name"):
        validate_name(bad)


def test_valid_names():
    for good in ["a", "A1", "my_docs-2", "x" * 64]:
        assert validate_name(good) == good


def test_manifest_describes_snapshot_and_keeps_calibration(catalog: CollectionCatalog, tmp_path: Path):
    coll = catalog.create(CollectionConfig("c", "model-x", DIM, "cosine", "flat"))
    docs, x = _docs(20)
    coll.upsert(docs, x)
    update_manifest(coll.folder, calibration={"method": "cosine-adapter", "version": 1})
    coll.snapshot()
    manifest = read_manifest(coll.folder)
    assert manifest is not None
    assert {k: manifest[k] for k in ("model", "dim", "metric", "index_kind", "built_kind", "count", "seq")} == {
        "model": "model-x", "dim": DIM, "metric": "cosine", "index_kind": "flat", "built_kind": "flat",
        "count": 20, "seq": coll.store.last_seq}
    assert manifest["calibration"] == {"method": "cosine-adapter", "version": 1}  # carried over
    assert len(manifest["sha256"]) == 64
    files = sorted(p.name for p in coll.folder.glob("index-*.npz"))
    assert files == [manifest["index_file"]]  # older snapshots removed, no temp files left
    assert not list(coll.folder.glob(".*.tmp"))


def test_unsnapshotted_writes_are_replayed_on_open(catalog: CollectionCatalog, tmp_path: Path):
    coll = catalog.create(CollectionConfig("c", "m", DIM))
    docs, x = _docs(30)
    coll.upsert(docs, x)
    coll.snapshot()
    more, y = _docs(10, start=30)
    coll.upsert(more, y)  # acknowledged, not in the snapshot
    coll.delete(["d0", "d1"])  # likewise
    coll.upsert([Document("d5", "replaced", {})], -x[5:6])
    # a crash: nothing closed, nothing flushed beyond what upsert/delete committed
    snapshot_seq = read_manifest(coll.folder)["seq"]
    reopened = Collection.open(coll.folder)
    assert len(reopened.index) == reopened.store.count() == 38
    assert read_manifest(coll.folder)["seq"] == snapshot_seq  # a short replay waits for the snapshot policy
    hits = reopened.search(y[:1], 1)[0].hits
    assert hits[0].id == "d30"
    assert not {"d0", "d1"} & {h.id for h in reopened.search(x[:2], 5)[0].hits}
    assert reopened.search(-x[5:6], 1)[0].hits[0].text == "replaced"
    last = reopened.store.last_seq
    reopened.close()
    assert read_manifest(coll.folder)["seq"] == last > snapshot_seq  # closing writes it


def test_corrupt_snapshot_isolates_one_collection(tmp_path: Path):
    cat = CollectionCatalog(tmp_path)
    good = cat.create(CollectionConfig("good", "m", DIM))
    bad = cat.create(CollectionConfig("bad", "m", DIM))
    for coll in (good, bad):
        coll.upsert(*_docs(12))
        coll.snapshot()
    index_file = bad.folder / read_manifest(bad.folder)["index_file"]
    cat.close()
    index_file.write_bytes(b"\0garbage" + index_file.read_bytes()[8:])

    cat2 = CollectionCatalog(tmp_path)
    errors = cat2.open_all()
    assert errors["good"] is None and "checksum mismatch" in errors["bad"]
    assert cat2.get("good").search(_docs(1)[1], 1)[0].hits
    with pytest.raises(CollectionUnavailable, match="bad.*checksum mismatch"):
        cat2.get("bad")
    assert cat2.describe("bad")["status"] == "unavailable"
    fixed = cat2.reload("bad", rebuild=True)  # rebuilt from the store's vectors
    assert len(fixed.index) == fixed.store.count() == 12
    cat2.close()


def test_manifest_of_another_model_is_a_mismatch(tmp_path: Path):
    cat = CollectionCatalog(tmp_path)
    coll = cat.create(CollectionConfig("c", "m", DIM))
    coll.upsert(*_docs(3))
    cat.close()
    update_manifest(tmp_path / "collections" / "c", dim=DIM * 2)
    cat2 = CollectionCatalog(tmp_path)
    assert "dim 16 does not match the store's 8" in cat2.open_all()["c"]
    cat2.close()


def test_catalog_create_delete_and_errors(catalog: CollectionCatalog):
    catalog.create(CollectionConfig("a", "m", DIM))
    with pytest.raises(CollectionExists):
        catalog.create(CollectionConfig("a", "m", DIM))
    with pytest.raises(InvalidDocument, match="metric"):
        catalog.create(CollectionConfig("b", "m", DIM, metric="hamming"))
    assert not (catalog.root / "b").exists()
    assert catalog.names() == ["a"]
    catalog.delete("a")
    assert catalog.names() == [] and not (catalog.root / "a").exists()
    with pytest.raises(CollectionNotFound):
        catalog.get("a")
    with pytest.raises(CollectionNotFound):
        catalog.delete("a")


def test_filtered_search_is_exact_and_full(catalog: CollectionCatalog):
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind="hnsw"))
    docs, x = _docs(400)
    for d in docs:
        d.metadata["shard"] = d.metadata["i"] % 8
    coll.upsert(docs, x)
    result = coll.search(x[:1], 10, {"shard": 3})[0]
    assert result.filtered_count == 50 and len(result.hits) == 10
    assert all(h.metadata["shard"] == 3 for h in result.hits)
    members = np.array([i for i in range(400) if i % 8 == 3])
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = members[np.argsort(-(xn[members] @ xn[0]))[:10]]
    assert [h.id for h in result.hits] == [f"d{i}" for i in want]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat"])
def test_exact_filtered_search_reads_the_index_vectors_where_it_keeps_them(catalog: CollectionCatalog, kind):
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind=kind))
    docs, x = _docs(2500)
    coll.upsert(docs, x)
    coll.rebuild()  # ivf_flat trains once it holds enough vectors
    assert coll.index.kind == kind
    vids = np.asarray([d.vid for d in docs[::7]] + [12345], dtype=np.int64)  # one vid that is not there
    held = coll.index.exact_vectors(vids)
    if kind == "ivf_flat":
        assert held is None  # the store answers instead
    else:
        found, vectors = coll.store.vectors_for(vids)
        order = np.argsort(found)
        assert np.array_equal(np.sort(held[0]), found[order])
        np.testing.assert_allclose(vectors[order], held[1][np.argsort(held[0])], atol=1e-6)
    result = coll.search(x[3:4], 10, {"i": {"$lt": 600}})[0]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    want = np.argsort(-(xn[:600] @ xn[3]))[:10]
    assert [h.id for h in result.hits] == [f"d{i}" for i in want]


def test_index_statistics_follow_the_collection_so_the_selective_index_is_used(catalog: CollectionCatalog):
    # Without statistics SQLite takes the flag's index here (the later one): 3000 rows read for 10.
    coll = catalog.create(CollectionConfig("c", "m", DIM), metadata_indexes=["tenant", "flag"])
    docs, x = _docs(3000)
    for d in docs:
        d.metadata.update(flag=True, tenant=f"t{d.metadata['i'] % 300}")
    coll.upsert(docs, x)
    assert coll.store.refresh_statistics()  # grew from empty: re-sampled
    assert not coll.store.refresh_statistics()  # the same size: nothing to do
    from indexing.filters import filter_sql

    where, params = filter_sql({"flag": True, "tenant": "t7"})
    plan = coll.store._conn.execute(f"EXPLAIN QUERY PLAN SELECT vid FROM documents WHERE {where}", params).fetchall()
    assert "meta:tenant" in plan[0][3]  # 10 rows of 3000, not the flag every document carries
    assert coll.search(x[:1], 20, {"flag": True, "tenant": "t7"})[0].filtered_count == 10


def test_calibrator_seam_fills_relevance_and_cuts(catalog: CollectionCatalog):
    class HalfScore:
        threshold = 0.5
        n_candidates = 50

        given: list[bool] = []

        def calibrate(self, query_vector, hits, candidates=None):
            assert candidates is None or len(candidates[1]) == self.n_candidates  # the one deeper search
            self.given.append(candidates is not None)
            for h in hits:
                h.relevance = (h.score + 1) / 2
            return hits

    coll = catalog.create(CollectionConfig("c", "m", DIM))
    docs, x = _docs(50)
    coll.upsert(docs, x)
    with pytest.raises(InvalidDocument, match="min_relevance"):
        coll.search(x[:1], 5, min_relevance=0.5)
    kept = coll.search(x[:1], 5, min_relevance=0.0)[0]  # 0 cuts nothing, so it needs no calibration
    assert [h.id for h in kept.hits] == [h.id for h in coll.search(x[:1], 5)[0].hits] and kept.min_relevance is None
    coll.calibrator = HalfScore()
    result = coll.search(x[:1], 50, min_relevance=0.75)[0]
    assert HalfScore.given[-1]  # a page as deep as the calibrator's list is that list: no second search
    assert result.candidates == 50 and 0 < len(result.hits) < 50
    assert all(h.relevance >= 0.75 for h in result.hits)
    # A page shorter than the calibrator's depth: the same hits as an uncalibrated search of that size.
    page = coll.search(x[:1], 5, min_relevance=0.0)[0]
    assert HalfScore.given[-1]  # without a filter the collection's search hands its top-n over
    coll.search(x[:1], 5, {"i": 3}, min_relevance=0.0)
    assert not HalfScore.given[-1]  # with one, the calibrator must search the unfiltered top-n itself
    coll.calibrator = None
    assert [h.id for h in page.hits] == [h.id for h in coll.search(x[:1], 5)[0].hits]


def test_collection_grows_into_its_ann_kind_on_rebuild(catalog: CollectionCatalog):
    coll = catalog.create(CollectionConfig("c", "m", DIM, index_kind="ivf_flat"))
    assert coll.index.kind == "flat"  # too small to train lists
    coll.upsert(*_docs(2500))
    assert coll.index.needs_rebuild("ivf_flat")
    coll.rebuild()
    assert coll.index.kind == "ivf_flat" and len(coll.index) == 2500
    assert json.loads((coll.folder / "manifest.json").read_text())["built_kind"] == "ivf_flat"


def _chunked(n_docs: int, parts: int, seed: int = 0) -> tuple[list[Document], np.ndarray, list[list[Chunk]]]:
    """Documents of `parts` chunks each, with random chunk vectors (chunk 0's is the document's)."""
    rng = np.random.default_rng(seed)
    docs = [Document(f"long{i}", "x" * (10 * parts), {"i": i}) for i in range(n_docs)]
    vecs = rng.normal(size=(n_docs, parts, DIM)).astype(np.float32)
    chunks = [[Chunk(10 * p, 10 * p + 10, None if p == 0 else vecs[i, p]) for p in range(parts)]
              for i in range(n_docs)]
    return docs, vecs[:, 0], chunks


def test_chunked_documents_score_as_their_best_chunk_and_count_once(catalog: CollectionCatalog):
    coll = catalog.create(CollectionConfig("c", "m", DIM, chunk_tokens=64, chunk_overlap=8))
    docs, x, chunks = _chunked(3, parts=6)
    coll.upsert(docs, x, chunks)
    short, y = _docs(20, start=100)  # another seed than the chunks'
    coll.upsert(short, y)
    assert len(coll.index) == coll.store.vector_count() == 3 * 6 + 20 and coll.store.chunk_count() == 15
    target = chunks[1][4].vector
    hits = coll.search(target[None, :], 5)[0].hits
    assert hits[0].id == "long1" and hits[0].chunk is not None
    assert (hits[0].chunk.part, hits[0].chunk.start, hits[0].chunk.end) == (4, 40, 50)
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].passage == "x" * 10
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids)) == 5  # one hit per document, still top_k of them
    # The score of a document is the max over its chunks: exactly the brute-force answer.
    allv = np.concatenate([np.stack([x[i]] + [c.vector for c in chunks[i][1:]]) for i in range(3)] + [y])
    owner = [f"long{i}" for i in range(3) for _ in range(6)] + [d.id for d in short]
    alln = allv / np.linalg.norm(allv, axis=1, keepdims=True)
    q = y[7] / np.linalg.norm(y[7])
    best: dict[str, float] = {}
    for o, s in zip(owner, alln @ q, strict=True):
        best[o] = max(best.get(o, -2.0), float(s))
    want = sorted(best, key=lambda o: -best[o])[:10]
    got = coll.search(y[7:8], 10)[0].hits
    assert [h.id for h in got] == want
    np.testing.assert_allclose([h.score for h in got], [best[o] for o in want], atol=1e-5)


def test_every_chunk_of_one_document_matching_still_fills_top_k(catalog: CollectionCatalog):
    """Widening: 40 near-identical chunks of one document rank above everything else."""
    coll = catalog.create(CollectionConfig("c", "m", DIM, chunk_tokens=64, chunk_overlap=8))
    base = np.ones(DIM, np.float32)
    rng = np.random.default_rng(1)
    chunks = [[Chunk(p, p + 1, None if p == 0 else base + 0.01 * rng.normal(size=DIM).astype(np.float32))
               for p in range(40)]]
    coll.upsert([Document("dup", "y" * 40, {})], base[None, :], chunks)
    others, z = _docs(30, start=100)
    coll.upsert(others, z)
    hits = coll.search(base[None, :], 8)[0].hits
    assert hits[0].id == "dup" and len(hits) == 8 and len({h.id for h in hits}) == 8


def test_chunk_writes_are_replayed_and_replacements_drop_old_chunks(catalog: CollectionCatalog):
    coll = catalog.create(CollectionConfig("c", "m", DIM, chunk_tokens=64, chunk_overlap=8))
    docs, x, chunks = _chunked(4, parts=5)
    coll.upsert(docs, x, chunks)
    coll.snapshot()
    # Not in the snapshot: a document shrinks from 5 chunks to 2, another is deleted, a third is unchunked.
    d0, x0, c0 = _chunked(1, parts=2, seed=9)
    coll.upsert(d0, x0, c0)  # "long0" again
    coll.delete(["long1"])
    coll.upsert([Document("long2", "whole", {})], x[2:3])
    reopened = Collection.open(coll.folder)  # a crash: no close, no snapshot
    assert len(reopened.index) == reopened.store.vector_count() == 2 + 5 + 1
    assert reopened.store.chunk_count() == 1 + 4
    old_chunk = chunks[0][3].vector
    assert reopened.search(old_chunk[None, :], 4)[0].hits[0].chunk != ChunkRef(3, 30, 40)
    hit = reopened.search(c0[0][1].vector[None, :], 1)[0].hits[0]
    assert (hit.id, hit.chunk.part) == ("long0", 1)
    assert "long1" not in {h.id for h in reopened.search(chunks[1][2].vector[None, :], 4)[0].hits}
    reopened.rebuild()  # from the store's vectors: the same index
    assert len(reopened.index) == 8
    assert reopened.search(c0[0][1].vector[None, :], 1)[0].hits[0].chunk.part == 1
    reopened.close()


def test_document_ids_with_nul_are_refused(catalog: CollectionCatalog):
    coll = catalog.create(CollectionConfig("c", "m", DIM))
    with pytest.raises(InvalidDocument, match=r"documents\[0\].id: must not contain the NUL"):
        coll.upsert([Document("a\x001", "t", {})], np.ones((1, DIM), np.float32))
