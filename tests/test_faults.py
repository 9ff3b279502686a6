"""kill -9 during *concurrent* upserts (several writers, two collections, multi-document batches): after a
restart every acknowledged document is there and findable. (tests/test_durability.py covers a single
sequential stream, the clean restart and the corrupt index file.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from tests.server import LiveServer

DIM = 8
WRITERS = 4
BATCH = 3
ENV = {"RRS_SNAPSHOT_EVERY": "10"}  # snapshots interleave with the writes, so recovery = snapshot + replay


def _vector(key: int) -> list[float]:
    return np.random.default_rng(key).normal(size=DIM).astype(np.float32).tolist()


def test_concurrent_acknowledged_upserts_survive_kill_9(server_factory: Callable[..., LiveServer],
                                                        tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = server_factory(env=ENV, data_dir=data)
    names = ("alpha", "beta")
    with server.client() as client:
        for name in names:
            r = client.post("/v1/collections", json={"name": name, "dimension": DIM, "model": "raw"})
            assert r.status_code == 201, r.text
    acked: dict[str, int] = {}  # document id -> vector key, for acknowledged writes only
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int) -> None:
        with server.client(timeout=10) as client:
            for n in range(100_000):
                if stop.is_set():
                    return
                keys = [w * 1_000_000 + n * BATCH + j for j in range(BATCH)]
                docs = [{"id": f"w{k}", "vector": _vector(k)} for k in keys]
                try:
                    r = client.post(f"/v1/collections/{names[w % 2]}/documents", json={"documents": docs})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.update({d["id"]: k for d, k in zip(docs, keys, strict=True)})

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 40 * BATCH and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL with every writer mid-stream
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) >= 40 * BATCH

    restarted = server_factory(env=ENV, data_dir=data)
    with restarted.client() as client:
        total = 0
        for name in names:
            info = client.get(f"/v1/collections/{name}").json()
            assert info["status"] == "ready" and info["indexed"] == info["count"]
            total += info["count"]
        assert total >= len(acked)  # requests cut by the kill may have committed without an answer
        missing = []
        for doc_id, key in acked.items():
            name = names[(key // 1_000_000) % 2]
            hits = client.post(f"/v1/collections/{name}/search", json={"vector": _vector(key), "top_k": 1}).json()
            if not hits["hits"] or hits["hits"][0]["id"] != doc_id:
                missing.append(doc_id)
        assert missing == []
