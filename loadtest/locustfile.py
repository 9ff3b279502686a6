"""Locust scenarios for rrs: embed, search (100k documents, by text or by vector), rerank, and a mixed
read/write workload.

Run one scenario by naming its user class (`locust -f loadtest/locustfile.py EmbedUser ...`);
`loadtest/run.sh` does that for each step of users. Users are closed-loop (no think time) so the
offered load grows with the user count, and they behave like good clients: a 503/429 is answered
by sleeping `Retry-After` seconds before the next request.

Every request is also appended to the file named by `RRS_LOADTEST_RECORD` (time, name, status,
milliseconds) so the runner can separate admitted, shed and failed requests exactly; locust's own
statistics count a shed request as a failure and mix its (tiny) latency into the percentiles.
"""

from __future__ import annotations

import os
import random
from typing import IO, Any

import gevent
import numpy as np
from locust import FastHttpUser, constant, events, task

from loadtest.text import random_text  # the runner puts the repository on PYTHONPATH

SEARCH_COLLECTION = os.environ.get("RRS_LOADTEST_COLLECTION", "bench100k")
API_KEY = os.environ.get("RRS_LOADTEST_API_KEY", "")

_record: IO[str] | None = None


@events.init.add_listener
def _open_record(environment: Any, **_: Any) -> None:
    global _record
    path = os.environ.get("RRS_LOADTEST_RECORD")
    if path:
        _record = open(path, "a", buffering=1 << 16)  # noqa: SIM115 - closed at quit


@events.request.add_listener
def _record_request(name: str, response_time: float, response: Any = None, exception: Any = None,
                    start_time: float | None = None, **_: Any) -> None:
    if _record is None:
        return
    status = getattr(response, "status_code", 0) or 0
    _record.write(f"{start_time or 0:.4f},{name},{status},{response_time:.3f}\n")


@events.quitting.add_listener
def _close_record(**_: Any) -> None:
    if _record is not None:
        _record.flush()
        _record.close()


class RrsUser(FastHttpUser):
    """Shared behaviour: auth header, loopback only, Retry-After honoured."""

    abstract = True
    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.rng = random.Random()
        self.headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}

    def post_json(self, path: str, body: dict[str, Any], name: str) -> None:
        with self.client.post(path, json=body, headers=self.headers, name=name, catch_response=True) as resp:
            if resp.status_code in (429, 503):
                resp.failure(f"shed {resp.status_code}")
                gevent.sleep(float(resp.headers.get("retry-after", "1") or 1))
            elif resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")


class EmbedUser(RrsUser):
    """One passage per request: the latency-sensitive shape (batching happens server-side)."""

    @task
    def embed(self) -> None:
        self.post_json("/v1/embeddings", {"input": random_text(self.rng, 60)}, "embed")


class SearchUser(RrsUser):
    """Text queries against the 100k-document collection (embed the query, then HNSW)."""

    @task
    def search(self) -> None:
        body = {"query": random_text(self.rng, self.rng.randint(8, 12)), "top_k": 10}
        self.post_json(f"/v1/collections/{SEARCH_COLLECTION}/search", body, "search")


class SearchVectorUser(RrsUser):
    """Vector queries against the 100k collection: the ANN + store path alone (clients that embed themselves)."""

    def on_start(self) -> None:
        super().on_start()
        self.queries = np.load(os.environ["RRS_LOADTEST_QUERY_VECTORS"])

    @task
    def search(self) -> None:
        vector = self.queries[self.rng.randrange(len(self.queries))].tolist()
        self.post_json(f"/v1/collections/{SEARCH_COLLECTION}/search", {"vector": vector, "top_k": 10},
                       "search by vector")


class RerankUser(RrsUser):
    """20 candidate passages per query with the server's default rerank method."""

    @task
    def rerank(self) -> None:
        docs = [random_text(self.rng, 40) for _ in range(20)]
        body = {"query": random_text(self.rng, 10), "documents": docs, "top_n": 5}
        self.post_json("/v1/rerank", body, "rerank")


class MixedUser(RrsUser):
    """Searches with a trickle of upserts (1 request in 20 writes 4 documents) into the same collection."""

    @task(19)
    def search(self) -> None:
        body = {"query": random_text(self.rng, self.rng.randint(8, 12)), "top_k": 10}
        self.post_json(f"/v1/collections/{SEARCH_COLLECTION}/search", body, "mixed search")

    @task(1)
    def upsert(self) -> None:
        docs = [{"id": f"u{self.rng.getrandbits(48):x}", "text": random_text(self.rng, 60),
                 "metadata": {"source": "loadtest"}} for _ in range(4)]
        self.post_json(f"/v1/collections/{SEARCH_COLLECTION}/documents", {"documents": docs}, "mixed upsert")
