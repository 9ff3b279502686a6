"""Graceful shutdown of `rrs serve`: SIGTERM stops accepting, drains in-flight requests, flushes index
snapshots and exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from service.process import REPO
from tests.server import LiveServer

RRS = str(Path(sys.executable).with_name("rrs"))


class RrsServeProcess(LiveServer):
    """The product's entry point (`rrs serve`, as in the container), not a bare uvicorn."""

    def start(self, timeout: float = 180.0) -> RrsServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the subprocess
        self.proc = subprocess.Popen([RRS, "serve", "--host", "127.0.0.1", "--port", str(self.port)], cwd=REPO,
                                     env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)
        return self


def _in_flight(client: httpx.Client) -> int:
    text = client.get("/metrics").text
    match = re.search(r"^rrs_requests_in_flight (\S+)$", text, re.M)
    return int(float(match.group(1))) if match else 0


def test_sigterm_drains_in_flight_requests_flushes_snapshots_and_exits_zero(tmp_path: Path) -> None:
    server = RrsServeProcess(tmp_path / "srv", env={"RRS_LOG_LEVEL": "info", "RRS_SNAPSHOT_EVERY": "100000",
                                                         "RRS_SHUTDOWN_GRACE_S": "300"})
    server.start()
    try:
        with server.client() as client:
            assert client.post("/v1/collections", json={"name": "notes"}).status_code == 201
            docs = [{"id": f"d{i}", "text": f"note number {i} about shutdown"} for i in range(7)]
            assert client.post("/v1/collections/notes/documents", json={"documents": docs}).status_code == 200
        manifest_path = server.data_dir / "collections" / "notes" / "manifest.json"
        assert json.loads(manifest_path.read_text())["count"] == 0  # the writes are not snapshotted yet

        # Requests big enough to still be running when the signal arrives (about a second of CPU each).
        texts = [f"sentence {i} " + "padding words to make the batch heavy " * 6 for i in range(64)]
        n_requests = 4
        pool = ThreadPoolExecutor(n_requests)
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            futures = [pool.submit(client.post, "/v1/embeddings", json={"input": texts}) for _ in range(n_requests)]
            deadline = time.monotonic() + 60
            while _in_flight(client) < n_requests and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _in_flight(client) == n_requests
            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert not all(f.done() for f in futures), "requests finished before the signal; make them heavier"
            # no new connections while draining
            refused = False
            try:
                httpx.post(f"{server.base_url}/v1/embeddings", json={"input": "late"}, timeout=5)
            except httpx.ConnectError:
                refused = True
            assert refused
            responses = [f.result() for f in futures]
        pool.shutdown()
        assert [r.status_code for r in responses] == [200] * n_requests
        assert all(len(r.json()["data"]) == len(texts) for r in responses)
        assert server.proc.wait(60) == 0, server.logs()[-3000:]
        manifest = json.loads(manifest_path.read_text())
        assert manifest["count"] == 7  # the lifespan flushed the index snapshot on the way out
    finally:
        server.kill()

