"""VectorIndex: every kind against exact search, deletes/replacements, filters, persistence."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from indexing.ann import VectorIndex, resolve_kind
from indexing.errors import DimensionMismatch


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(0, clusters, n)] + 0.35 * rng.normal(size=(n, dim))
    return x.astype(np.float32)


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ xn.T), axis=1)[:, :k]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """OpenMP spin-waits on a loaded 2-core machine; one thread keeps these tests fast and stable."""
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(faiss.omp_get_max_threads())


X = clustered(5000)
Q = clustered(50, seed=1)
VIDS = np.arange(5000, dtype=np.int64) * 7 + 3  # vector ids unrelated to positions


def _built(kind: str, device: str = "cpu") -> VectorIndex:
    return VectorIndex.build(32, "cosine", kind, len(X), lambda: iter([(VIDS, X)]), device=device)


@pytest.mark.parametrize(("kind", "min_recall"), [("flat", 1.0), ("hnsw", 0.95), ("ivf_flat", 0.9)])
def test_kinds_recall_against_exact(kind: str, min_recall: float):
    index = _built(kind)
    assert index.kind == kind and len(index) == len(X)
    _, vids = index.search(Q, 10)
    truth = VIDS[exact_topk(X, Q, 10)]
    assert recall(vids, truth) >= min_recall


def test_flat_scores_are_cosine_similarities():
    index = _built("flat")
    scores, vids = index.search(Q[:3], 5)
    pos = (vids - 3) // 7
    xn = X[pos] / np.linalg.norm(X[pos], axis=2, keepdims=True)
    qn = Q[:3] / np.linalg.norm(Q[:3], axis=1, keepdims=True)
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", qn, xn), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat"])
def test_delete_and_replace_never_return_stale_vectors(kind: str):
    index = _built(kind)
    _, before = index.search(X[:5], 1)
    assert before[:, 0].tolist() == VIDS[:5].tolist()
    assert index.remove(VIDS[:3]) == 3 and len(index) == len(X) - 3
    _, after = index.search(X[:5], 10)
    assert not set(VIDS[:3]) & set(after.ravel().tolist())
    # replace vid 4's vector with a far one: the old position must stop matching it
    index.add(VIDS[4:5], -X[4:5])
    _, hits = index.search(X[4:5], 5)
    assert VIDS[4] not in hits[0]
    _, hits = index.search(-X[4:5], 1)
    assert hits[0, 0] == VIDS[4]
    assert len(index) == len(X) - 3


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_allowed_ids_keep_full_top_k(kind: str):
    index = _built(kind)
    allowed = VIDS[::10]  # 500 of 5000
    _, vids = index.search(Q, 10, allowed_vids=allowed)
    assert set(vids.ravel().tolist()) <= set(allowed.tolist())
    assert (vids >= 0).all()  # no lost results: top-10 of the allowed set, full
    truth = allowed[exact_topk(X[::10], Q, 10)]
    assert recall(vids, truth) >= (1.0 if kind == "flat" else 0.9)


def test_fewer_matches_than_k_pads_with_minus_one():
    index = _built("flat")
    _, vids = index.search(Q[:2], 5, allowed_vids=VIDS[:2])
    assert sorted(vids[0, :2].tolist()) == sorted(VIDS[:2].tolist())
    assert (vids[:, 2:] == -1).all()


def test_ivf_pq_recall_and_roundtrip():
    x = clustered(10_000, dim=16, seed=4)
    q = clustered(30, dim=16, seed=5)
    vids = np.arange(len(x), dtype=np.int64)
    index = VectorIndex.build(16, "cosine", "ivf_pq", len(x), lambda: iter([(vids, x)]))
    assert index.kind == "ivf_pq"
    found = index.search(q, 10)[1]
    assert recall(found, exact_topk(x, q, 10)) >= 0.5  # 4 dims per 8-bit code: lossy by design
    copy = VectorIndex.deserialize(index.serialize(), 16, "cosine", "ivf_pq")
    np.testing.assert_array_equal(copy.search(q, 10)[1], found)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_serialize_roundtrip_answers_identically(kind: str):
    index = _built(kind)
    index.remove(VIDS[:10])
    copy = VectorIndex.deserialize(index.serialize(), 32, "cosine", index.kind)
    assert len(copy) == len(index) and copy.dead == 10
    np.testing.assert_array_equal(copy.search(Q, 10)[1], index.search(Q, 10)[1])


def test_metrics_ip_and_l2_order_as_defined():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    q = rng.normal(size=(4, 8)).astype(np.float32)
    vids = np.arange(200)
    ip = VectorIndex(8, "ip")
    ip.add(vids, x)
    np.testing.assert_array_equal(ip.search(q, 5)[1], np.argsort(-(q @ x.T), axis=1)[:, :5])
    l2 = VectorIndex(8, "l2")
    l2.add(vids, x)
    d2 = ((q[:, None] - x[None]) ** 2).sum(-1)
    scores, got = l2.search(q, 5)
    np.testing.assert_array_equal(got, np.argsort(d2, axis=1)[:, :5])
    np.testing.assert_allclose(scores, -np.sort(d2, axis=1)[:, :5], rtol=1e-4)  # higher is better


@pytest.mark.parametrize("device", [
    "torch:cpu",
    pytest.param("torch:cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
])
def test_torch_exact_backend_matches_faiss_flat(device: str):
    faiss_flat = _built("flat")
    torch_flat = _built("flat", device=device)
    assert torch_flat._mirror is not None
    s1, v1 = faiss_flat.search(Q, 10)
    s2, v2 = torch_flat.search(Q, 10)
    np.testing.assert_array_equal(v1, v2)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    torch_flat.remove(v2[:, 0])  # the mirror honours deletes too
    _, v3 = torch_flat.search(Q, 10)
    assert not set(v2[:, 0].tolist()) & set(v3.ravel().tolist())


def test_auto_kind_and_ivf_fallback_by_size():
    assert resolve_kind("auto", 1_000) == "flat"
    assert resolve_kind("auto", 1_000_000) == "hnsw"
    assert resolve_kind("ivf_pq", 100) == "flat"  # untrainable yet: exact until it has enough vectors
    index = VectorIndex(32, "cosine", "flat")
    index.add(VIDS[:100], X[:100])
    assert not index.needs_rebuild("flat") and index.needs_rebuild("hnsw")


def test_rejects_bad_vectors():
    index = VectorIndex(32)
    with pytest.raises(DimensionMismatch, match="expected dimension 32, got 3"):
        index.add(np.array([1]), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 32), np.nan), 1)
