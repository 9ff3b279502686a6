"""Global admission control: a cap on requests in flight, shedding the excess with 503 + Retry-After.

Each endpoint family has its own bounded queue (the embedding batcher), but searches by vector,
collection writes and anything CPU-bound in thread pools have none, and a per-queue bound still lets
total latency grow with the number of waiting requests. One cap on the whole process bounds the
work admitted (so the latency of admitted requests stays near cap / throughput, and memory stays
bounded) and refuses the rest at once, cheaply, before the body is read. Operational endpoints stay
outside the cap so an overloaded server can still be probed and scraped.
"""

from __future__ import annotations

import json

from prometheus_client import Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from service.metrics import Metrics

# Probes, metrics and docs must answer during overload; they are cheap and never queue.
EXEMPT_PATHS = frozenset({"/health", "/ready", "/metrics", "/docs", "/openapi.json"})


class AdmissionMiddleware:
    """Admits at most `max_inflight` concurrent HTTP requests; the rest get 503 + `Retry-After`."""

    def __init__(self, app: ASGIApp, max_inflight: int, metrics: Metrics, retry_after_s: int = 1) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.inflight = 0  # one event loop: plain integer arithmetic between awaits is atomic
        self.inflight_gauge = Gauge("rrs_requests_in_flight", "HTTP requests admitted and not yet answered.",
                                    registry=metrics.registry)

    async def _shed(self, send: Send) -> None:
        body = json.dumps({"error": {
            "type": "overloaded",
            "message": f"server at capacity ({self.max_inflight} requests in flight, "
                       f"RRS_MAX_INFLIGHT_REQUESTS); retry after {self.retry_after_s}s",
        }}).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(self.retry_after_s).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            self.metrics.rejected.labels("admission").inc()
            await self._shed(send)
            return
        self.inflight += 1
        self.inflight_gauge.set(self.inflight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            self.inflight_gauge.set(self.inflight)
