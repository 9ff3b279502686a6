"""Backpressure: a flood far above capacity is shed with 503 + Retry-After (never another 5xx), probes keep
answering, memory stays flat, and the server serves normally once the flood stops. Behavioural, not timed."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server import LiveServer

MAX_INFLIGHT = 4


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(tmp_path_factory.mktemp("rrs-overload"), env={
        "RRS_MAX_INFLIGHT_REQUESTS": str(MAX_INFLIGHT), "RRS_OVERLOAD_RETRY_AFTER_S": "2"})
    server.start()
    with server.client() as client:
        assert client.post("/v1/collections", json={"name": "flood"}).status_code == 201
        rng = np.random.default_rng(0)
        vectors = rng.standard_normal((200, 384)).astype(np.float32)
        docs = [{"id": f"v{i}", "text": f"doc {i}", "vector": v.tolist()} for i, v in enumerate(vectors)]
        assert client.post("/v1/collections/flood/documents", json={"documents": docs}).status_code == 200
    yield server
    server.stop()


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024  # type: ignore[union-attr]


def _flood(server: LiveServer, n: int) -> list[httpx.Response]:
    """`n` concurrent requests, a mix of embeddings and vector searches (which have no queue of their own)."""
    texts = [f"overload text number {i} with a few more words" for i in range(24)]
    query_vector = [0.05] * 384
    local = threading.local()

    def one(i: int) -> httpx.Response:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server.base_url, timeout=120)
        if i % 3 == 2:
            return local.client.post("/v1/collections/flood/search", json={"vector": query_vector, "top_k": 5})
        return local.client.post("/v1/embeddings", json={"input": texts})

    with ThreadPoolExecutor(32) as pool:
        return list(pool.map(one, range(n)))


def test_flood_is_shed_with_503_and_retry_after_then_recovers(small_server: LiveServer) -> None:
    stop = threading.Event()
    probe_statuses: list[int] = []

    def probe() -> None:  # probes and metrics are outside the cap: they answer during the flood
        with small_server.client(timeout=30) as client:
            while not stop.is_set():
                probe_statuses.append(client.get("/health").status_code)
                probe_statuses.append(client.get("/metrics").status_code)
                stop.wait(0.2)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        responses = _flood(small_server, 160)
    finally:
        stop.set()
        prober.join()

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0 and statuses[200] >= MAX_INFLIGHT, statuses
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2"
            assert r.json()["error"]["type"] == "overloaded"
        else:
            body = r.json()
            assert len(body.get("data", body.get("hits", []))) > 0
    assert probe_statuses and set(probe_statuses) == {200}

    with small_server.client() as client:
        r = client.post("/v1/embeddings", json={"input": "after the flood"})
        assert r.status_code == 200
        r = client.post("/v1/collections/flood/search", json={"query": "doc 7", "top_k": 3})
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
        metrics = client.get("/metrics").text
    shed = re.search(r'^rrs_rejected_requests_total\{queue="admission"\} (\S+)$', metrics, re.M)
    assert shed is not None and float(shed.group(1)) == statuses[503]
    assert re.search(r"^rrs_requests_in_flight 0\.0$", metrics, re.M)  # every admitted request released its slot


def test_memory_stays_flat_under_repeated_floods(small_server: LiveServer) -> None:
    assert small_server.proc is not None
    _flood(small_server, 96)  # warm: first batches of each shape allocate their buffers
    baseline = _rss_mb(small_server.proc.pid)
    for _ in range(3):
        statuses = Counter(r.status_code for r in _flood(small_server, 96))
        assert set(statuses) <= {200, 503}
    assert _rss_mb(small_server.proc.pid) < baseline + 150
