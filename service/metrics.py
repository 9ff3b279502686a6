"""Prometheus metrics, one registry per app (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_STAGE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class Metrics:
    """Everything the server exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._collections: _CollectionGauges | None = None
        r = self.registry
        self.requests = Counter("rrs_requests_total", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("rrs_request_duration_seconds", "HTTP request latency by route.",
                                 ["method", "route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.stage = Histogram("rrs_stage_duration_seconds",
                               "Time per processing stage (queue, tokenize, inference, search, rerank).",
                               ["stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.queue_depth = Gauge("rrs_queue_depth", "Requests waiting in a batching queue.", ["queue"],
                                 registry=r)
        self.batch_size = Histogram("rrs_batch_size", "Inputs per model batch.", ["queue"],
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.batch_tokens = Histogram("rrs_batch_tokens", "Padded tokens per model batch.", ["queue"],
                                      buckets=(64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
                                      registry=r)
        self.tokens = Counter("rrs_tokens_total", "Real (unpadded) tokens processed.", ["queue"], registry=r)
        self.dropped = Counter("rrs_dropped_requests_total",
                               "Requests dropped before inference (client gone, deadline passed).",
                               ["queue", "reason"], registry=r)
        self.rejected = Counter("rrs_rejected_requests_total", "Requests refused at admission (queue full).",
                                ["queue"], registry=r)
        self.cache = Counter("rrs_embedding_cache_total", "Query-embedding cache lookups.", ["result"],
                             registry=r)

    def watch_collections(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        """Export each collection's state, read from `describe()` at every scrape (nothing to keep in step).
        A second call (the app started again) replaces the first."""
        if self._collections is not None:
            self.registry.unregister(self._collections)
        self._collections = _CollectionGauges(describe)
        self.registry.register(self._collections)


class _CollectionGauges(Collector):
    def __init__(self, describe: Callable[[], list[dict[str, Any]]]) -> None:
        self._describe = describe

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("rrs_collection_up", "1 while a collection serves, 0 while it is unavailable.",
                               labels=["collection"])
        docs = GaugeMetricFamily("rrs_collection_documents", "Documents in a collection's store.",
                                 labels=["collection"])
        vectors = GaugeMetricFamily("rrs_collection_vectors", "Vectors live in a collection's ANN index.",
                                    labels=["collection"])
        lag = GaugeMetricFamily("rrs_collection_unsnapshotted_writes",
                                "Store writes newer than the index snapshot (replayed at the next start).",
                                labels=["collection"])
        for info in self._describe():
            name = [info["name"]]
            up.add_metric(name, 1.0 if info.get("status") == "ready" else 0.0)
            if info.get("status") == "ready":
                docs.add_metric(name, info["count"])
                vectors.add_metric(name, info["indexed"])
                lag.add_metric(name, max(0, info["store_seq"] - info["snapshot_seq"]))
        yield from (up, docs, vectors, lag)

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # read at scrape time only: registering must not call into the catalog
