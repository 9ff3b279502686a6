"""Per-request stage timings, reported as a `Server-Timing` header and as histograms."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.requests import Request


class StageTimings:
    """Accumulates named stage durations (seconds) for one request."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + max(0.0, seconds)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def header(self, total_s: float | None = None) -> str:
        parts = [f"{name};dur={sec * 1000:.2f}" for name, sec in self.stages.items()]
        if total_s is not None:
            parts.append(f"total;dur={total_s * 1000:.2f}")
        return ", ".join(parts)


def request_timings(request: Request) -> StageTimings:
    """The request's timings object (created by the timing middleware)."""
    timings = request.scope.setdefault("state", {}).get("timings")
    if timings is None:
        timings = StageTimings()
        request.scope["state"]["timings"] = timings
    return timings
