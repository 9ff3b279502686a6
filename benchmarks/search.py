"""Search benchmark: each index kind's recall@10 against exact search and its queries/s, plus the
search endpoint's latency against a direct FAISS call on the same index, measured in one run.

Data is synthetic: unit-normalised 384-d vectors drawn from a mixture of 1000 Gaussian clusters (real
embeddings are clustered too; uniform random vectors would make every ANN index look bad), and
queries drawn fresh from the same mixture. The baseline for every speed ratio is exact search
(FAISS IndexFlatIP through the same VectorIndex wrapper) in the same run.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexing.ann import HNSW_EF_SEARCH, VectorIndex

SWEEPS = {"hnsw": [32, 64, 128, 256], "ivf_flat": [8, 16, 32, 64, 128], "ivf_pq": [16, 64, 128]}


def clustered_vectors(
    n: int, dim: int = 384, clusters: int = 1000, noise: float = 1.0, seed: int = 0, centers_seed: int = 12345
) -> np.ndarray:
    """`n` unit vectors from a Gaussian mixture; the same `centers_seed` gives the same mixture."""
    centers = np.random.default_rng(centers_seed).normal(size=(clusters, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # chunks keep the float32 peak at the output's size
        m = min(100_000, n - start)
        x = centers[rng.integers(0, clusters, m)] + noise * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


@dataclass
class AnnRow:
    n: int
    kind: str
    param: str
    build_s: float
    recall_at_10: float
    qps: float
    speedup_vs_exact: float
    default: bool = False


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def _timed_search(index: VectorIndex, q: np.ndarray, k: int, repeats: int = 3) -> tuple[np.ndarray, float]:
    """Best of `repeats` wall times of one batched search (the machine is shared and noisy)."""
    best = float("inf")
    vids = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, vids = index.search(q, k)
        best = min(best, time.perf_counter() - t0)
    assert vids is not None
    return vids, len(q) / best


def ann_benchmark(
    n: int,
    kinds: list[str],
    n_queries: int = 1000,
    exact_queries: int = 200,
    k: int = 10,
    dim: int = 384,
    torch_device: str | None = None,
) -> list[AnnRow]:
    """Build each kind over the same `n` vectors; recall@k against exact and QPS against exact."""
    x = clustered_vectors(n, dim, seed=1)
    q = clustered_vectors(n_queries, dim, seed=2)
    ids = np.arange(n, dtype=np.int64)

    def batches() -> Any:
        return iter((ids[s : s + 100_000], x[s : s + 100_000]) for s in range(0, n, 100_000))

    t0 = time.perf_counter()
    exact = VectorIndex.build(dim, "cosine", "flat", n, batches)
    exact_build = time.perf_counter() - t0
    truth = exact.search(q, k)[1]
    _, exact_qps = _timed_search(exact, q[:exact_queries], k, repeats=2)
    rows = [AnnRow(n, "flat", "exact", exact_build, 1.0, exact_qps, 1.0, True)]
    del exact
    if torch_device:
        t0 = time.perf_counter()
        gpu = VectorIndex.build(dim, "cosine", "flat", n, batches, device=f"torch:{torch_device}")
        build = time.perf_counter() - t0
        found, qps = _timed_search(gpu, q, k)
        rows.append(
            AnnRow(
                n, f"flat (torch {torch_device})", "exact", build, _recall(found, truth), qps, qps / exact_qps, False
            )
        )
        del gpu
    for kind in kinds:
        t0 = time.perf_counter()
        index = VectorIndex.build(dim, "cosine", kind, n, batches)
        build = time.perf_counter() - t0
        default = index.ef_search if kind == "hnsw" else index.nprobe
        values = sorted(set(SWEEPS[kind]) | {default})
        for value in values:
            if kind == "hnsw":
                index.ef_search = value
                label = f"efSearch={value}"
            else:
                index.nprobe = value
                label = f"nprobe={value}/{faiss.extract_index_ivf(index.index).nlist}"
            found, qps = _timed_search(index, q, k)
            rows.append(AnnRow(n, kind, label, build, _recall(found, truth), qps, qps / exact_qps, value == default))
        del index
    return rows


@dataclass
class EndpointRow:
    n: int
    kind: str
    path: str
    p50_ms: float
    p95_ms: float


def default_kind_calibration(dim: int, n_candidates: int = 100) -> Any:
    """A calibration shaped like `rrs calibrate`'s default pick (list coherence at m=10, rank term), for timing.

    Its weights are arbitrary: the serving cost does not depend on them.
    """
    from indexing.calibration.model import CalibratorConfig, QueryDependentCalibrator
    from indexing.calibration.relevance import RelevanceCalibration

    config = CalibratorConfig("power", "none", 0.003, n_candidates=n_candidates, topic_size=10,
                              topic_feature="coherence", rank_term=True)
    weights = np.array([0.5, -0.5])
    calibrator = QueryDependentCalibrator(config, weights, weights, 0.5, np.zeros(1), np.ones(1), None, weights)
    return RelevanceCalibration(calibrator, 0.5, "synthetic", dim)


def endpoint_benchmark(
    n: int = 100_000, requests: int = 300, dim: int = 384, kind: str = "auto", data_dir: Path | None = None
) -> list[EndpointRow]:
    """Single-query latency: raw FAISS call vs Collection.search (adds the SQLite join) vs HTTP.

    Both sides load the same snapshot, so the index is identical; requests are sequential.
    """
    from indexing.calibration.serving import CollectionCalibrator
    from indexing.collection import Collection, CollectionConfig
    from indexing.store import Document
    from service.process import ServerProcess

    root = Path(data_dir or tempfile.mkdtemp(prefix="rrs-bench-"))
    folder = root / "collections" / "bench"
    x = clustered_vectors(n, dim, seed=3)
    if not folder.exists():
        coll = Collection.create(
            folder, CollectionConfig("bench", "synthetic", dim, "cosine", kind), snapshot_every=10**9
        )
        for s in range(0, n, 10_000):
            docs = [
                Document(f"doc{i}", f"synthetic document {i}", {"shard": i % 16}) for i in range(s, min(n, s + 10_000))
            ]
            coll.upsert(docs, x[s : s + 10_000])
        coll.rebuild()
        coll.close()
    queries = clustered_vectors(requests, dim, seed=4)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # as the server runs FAISS (RRS_FAISS_THREADS=1)
    direct = Collection.open(folder)
    built = direct.index.kind
    raw_ms, coll_ms, http_ms, floor_ms = [], [], [], []
    for qv in queries[:20]:  # warm caches
        direct.search(qv[None], 10)
    for qv in queries:
        q1 = qv[None]
        t0 = time.perf_counter()
        raw_index, raw_params = direct.index.faiss_call(None, direct.index.effort(10))
        raw_index.search(q1, 10, params=raw_params)
        t1 = time.perf_counter()
        direct.search(q1, 10)
        t2 = time.perf_counter()
        raw_ms.append((t1 - t0) * 1e3)
        coll_ms.append((t2 - t1) * 1e3)
    # The same searches with a calibrator of the default kind attached in memory (the manifest, which
    # the server below reads, stays uncalibrated): its cost is one more unfiltered top-n search, the
    # n candidates' stored vectors and the features, whatever the parameter values are.
    direct.calibrator = CollectionCalibrator(default_kind_calibration(dim), direct)
    calibrated_ms = []
    for qv in queries:
        t0 = time.perf_counter()
        [result] = direct.search(qv[None], 10, min_relevance=0.0)
        calibrated_ms.append((time.perf_counter() - t0) * 1e3)
        assert result.hits and result.hits[0].relevance is not None
    direct.calibrator = None
    server = ServerProcess(root, env={"RRS_DEMO_COLLECTION": "false", "RRS_LOG_LEVEL": "warning"})
    server.start()
    try:
        # stdlib keep-alive client with TCP_NODELAY: a client library's own overhead is not the endpoint's
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        headers = {"content-type": "application/json"}

        def call(method: str, path: str, body: str | None = None) -> float:
            t0 = time.perf_counter()
            conn.request(method, path, body=body, headers=headers if body else {})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {response.status}")
            return (time.perf_counter() - t0) * 1e3

        bodies = [json.dumps({"vector": qv.tolist(), "top_k": 10}) for qv in queries]
        for body in bodies[:20]:
            call("POST", "/v1/collections/bench/search", body)
        for body in bodies:
            floor_ms.append(call("GET", "/health"))
            http_ms.append(call("POST", "/v1/collections/bench/search", body))
        conn.close()
    finally:
        server.stop()
        direct.close(snapshot=False)
        faiss.omp_set_num_threads(threads)

    def row(path: str, values: list[float]) -> EndpointRow:
        return EndpointRow(n, built, path, float(np.percentile(values, 50)), float(np.percentile(values, 95)))

    return [
        row("faiss index.search (direct)", raw_ms),
        row("Collection.search (+ SQLite join)", coll_ms),
        row("Collection.search + calibrated relevance (coherence m=10 + rank term, n=100)", calibrated_ms),
        row("POST /v1/collections/{name}/search", http_ms),
        row("GET /health (HTTP floor)", floor_ms),
    ]


def run(
    sizes: list[int],
    kinds: list[str],
    n_queries: int,
    endpoint_n: int | None,
    threads: int | None,
    torch_device: str | None = None,
) -> dict[str, Any]:
    if threads:
        faiss.omp_set_num_threads(threads)
    ann = [r for n in sizes for r in ann_benchmark(n, kinds, n_queries, torch_device=torch_device)]
    endpoint = endpoint_benchmark(endpoint_n) if endpoint_n else []
    return {
        "ann": [asdict(r) for r in ann],
        "endpoint": [asdict(r) for r in endpoint],
        "threads": faiss.omp_get_max_threads(),
        "hnsw_default_ef": HNSW_EF_SEARCH,
    }
