"""Durability over real server processes: kill -9 mid-stream, clean restart, a corrupt index file.

One data directory lives through three server processes (few restarts keep the suite fast):
1. a stream of acknowledged upserts is cut by SIGKILL;
2. the restarted server has every acknowledged document (index count == store count); then it
   takes more writes and stops cleanly;
3. with one collection's index file corrupted, that collection answers a clear 503 while the
   other serves everything written before the clean stop; a rebuild brings it back.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from indexing.snapshot import read_manifest

DIM = 16
ENV = {"RRS_SNAPSHOT_EVERY": "7"}  # snapshots happen mid-stream, so recovery = snapshot + replay


def _vector(i: int) -> list[float]:
    return np.random.default_rng(i).normal(size=DIM).astype(np.float32).tolist()


def _top1(client: httpx.Client, name: str, i: int) -> str | None:
    r = client.post(f"/v1/collections/{name}/search", json={"vector": _vector(i), "top_k": 1})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    return hits[0]["id"] if hits else None


def test_acknowledged_writes_survive_kill_and_restart(server_factory, tmp_path: Path):
    data = tmp_path / "data"
    server = server_factory(env=ENV, data_dir=data)
    acked: list[str] = []
    with server.client() as c:
        for name in ("stream", "other"):
            r = c.post("/v1/collections", json={"name": name, "dimension": DIM, "model": "raw"})
            assert r.status_code == 201, r.text
        docs = [{"id": f"o{i}", "vector": _vector(1000 + i), "metadata": {"n": i}} for i in range(20)]
        assert c.post("/v1/collections/other/documents", json={"documents": docs}).status_code == 200
        # A metadata patch and a delete by filter, acknowledged before the kill, must survive it too.
        r = c.patch("/v1/collections/other/documents",
                    json={"documents": [{"id": "o1", "metadata": {"tag": "kept"}}], "merge": True})
        assert r.status_code == 200 and r.json()["updated"] == 1
        r = c.request("DELETE", "/v1/collections/other/documents", json={"filter": {"n": {"$in": [2, 3]}}})
        assert r.json()["deleted"] == 2

        def stream() -> None:
            with server.client(timeout=10) as sc:
                for i in range(100_000):
                    body = {"documents": [{"id": f"d{i}", "vector": _vector(i), "metadata": {"i": i}}]}
                    try:
                        r = sc.post("/v1/collections/stream/documents", json=body)
                    except httpx.HTTPError:
                        return  # the server died mid-request: not acknowledged
                    if r.status_code == 200:
                        acked.append(f"d{i}")

        writer = threading.Thread(target=stream)
        writer.start()
        deadline = time.monotonic() + 60
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL while the stream is running
        writer.join(30)
    assert len(acked) >= 40

    restarted = server_factory(env=ENV, data_dir=data)
    with restarted.client() as c:
        info = c.get("/v1/collections/stream").json()
        assert info["count"] >= len(acked)  # the in-flight request may have committed unacknowledged
        assert info["indexed"] == info["count"]
        missing = [doc_id for doc_id in acked if _top1(c, "stream", int(doc_id[1:])) != doc_id]
        assert missing == []
        kept = c.get("/v1/collections/other/documents", params={"ids": ["o1", "o2", "o3"]}).json()
        assert kept["data"][0]["metadata"] == {"n": 1, "tag": "kept"} and kept["missing"] == ["o2", "o3"]
        # more writes, then a clean stop: they must survive without a kill-time replay needing them
        late = [{"id": "late", "vector": _vector(5000), "metadata": {"late": True}}]
        assert c.post("/v1/collections/other/documents", json={"documents": late}).status_code == 200
        r = c.request("DELETE", "/v1/collections/other/documents", json={"ids": ["o0"]})
        assert r.json()["deleted"] == 1
    assert restarted.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after a graceful exit
    assert "Application shutdown complete" in restarted.logs()

    stream_dir = data / "collections" / "stream"
    index_file = stream_dir / read_manifest(stream_dir)["index_file"]
    raw = bytearray(index_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    index_file.write_bytes(bytes(raw))

    third = server_factory(env=ENV, data_dir=data)
    with third.client() as c:
        r = c.post("/v1/collections/stream/search", json={"vector": _vector(1), "top_k": 1})
        assert r.status_code == 503
        assert "checksum mismatch" in r.json()["error"]["message"]
        assert c.get("/v1/collections/stream").json()["status"] == "unavailable"
        metrics = c.get("/metrics").text  # operators see it too
        assert 'rrs_collection_up{collection="stream"} 0.0' in metrics
        assert 'rrs_collection_up{collection="other"} 1.0' in metrics
        # the other collection serves, with everything from before the clean stop
        assert _top1(c, "other", 5000) == "late"
        assert _top1(c, "other", 1000) != "o0"
        info = c.get("/v1/collections/other").json()
        assert info["count"] == info["indexed"] == 18
        # the store is the source of truth: a rebuild restores the broken collection
        r = c.post("/v1/collections/stream/reload", params={"rebuild": "true"})
        assert r.status_code == 200 and r.json()["indexed"] == r.json()["count"] >= len(acked)
        assert _top1(c, "stream", int(acked[-1][1:])) == acked[-1]
