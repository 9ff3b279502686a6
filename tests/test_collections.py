"""Collections on disk: snapshots, manifest, crash recovery, corruption isolation, names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.collection import Collection, CollectionCatalog, CollectionConfig, validate_name
from indexing.errors import (
    CollectionExists,
    CollectionNotFound,
    CollectionUnavailable,
    InvalidCollectionName,
    InvalidDocument,
)
from indexing.snapshot import read_manifest, update_manifest
from indexing.store import Document

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
    reopened = Collection.open(coll.folder)
    assert len(reopened.index) == reopened.store.count() == 38
    hits = reopened.search(y[:1], 1)[0].hits
    assert hits[0].id == "d30"
    assert not {"d0", "d1"} & {h.id for h in reopened.search(x[:2], 5)[0].hits}
    assert reopened.search(-x[5:6], 1)[0].hits[0].text == "replaced"
    reopened.close()


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
