"""The search cascade: rerank retrieved hits only when it can change the answer, within a deadline.

A calibrated relevance makes the cheap stage's confidence visible. When every candidate is already
confidently relevant or confidently irrelevant (no calibrated relevance strictly between `low` and
`high`), a reranker cannot usefully change which hits pass, so the stage is skipped. A rerank
that runs past its deadline returns the first-stage order, flagged as not reranked, not an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from indexing.collection import Hit
from service.errors import DeadlineExceeded
from service.reranking import RerankService
from service.schemas.collections import SearchRerank


@dataclass
class CascadeReport:
    """What the rerank stage did; returned with the search response."""

    applied: bool
    reason: str
    method: str | None = None
    model: str | None = None
    candidates: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class CascadePolicy:
    """Skip when all calibrated relevances lie outside (low, high); `enabled=False` always reranks."""

    enabled: bool = True
    low: float = 0.1
    high: float = 0.9

    def separated(self, hits: list[Hit]) -> bool:
        if not self.enabled or not hits or any(h.relevance is None for h in hits):
            return False  # no calibrated signal: nothing says the list is already right
        return all(h.relevance <= self.low or h.relevance >= self.high for h in hits)  # type: ignore[operator]


class RerankCascade:
    """The rerank stage of search, over the same `RerankService` that serves /v1/rerank."""

    def __init__(self, service: RerankService, policy: CascadePolicy, timeout_s: float) -> None:
        self.service = service
        self.policy = policy
        self.timeout_s = timeout_s

    async def __call__(self, query: str, hits: list[Hit], stage: SearchRerank) -> tuple[list[Hit], CascadeReport]:
        """Rerank the first `stage.candidates` hits (all by default); the rest keep their order after them."""
        method, model = self.service.resolve(stage.method, stage.model)  # 400 on unknown names, even if skipped
        head = hits[: stage.candidates] if stage.candidates else list(hits)
        tail = hits[len(head):]
        if not head:
            return hits, CascadeReport(False, "no candidates", method, model)
        if not stage.force and self.policy.separated(head):
            return hits, CascadeReport(False, "skipped: calibrated relevance already separates the candidates",
                                       method, model, len(head))
        timeout = min(stage.timeout_s or self.timeout_s, self.timeout_s)
        start = time.perf_counter()
        try:
            outcome = await self.service.rerank(query, [h.passage for h in head], method=method, model=model,
                                                deadline=time.monotonic() + timeout)
        except DeadlineExceeded:
            return hits, CascadeReport(False, f"deadline of {timeout:.3g}s passed: first-stage order kept",
                                       method, model, len(head), time.perf_counter() - start)
        for hit, score in zip(head, outcome.scores, strict=True):
            hit.rerank_score = float(score)
        ordered = sorted(head, key=lambda h: -h.rerank_score)  # type: ignore[operator]  # stable on ties
        return ordered + tail, CascadeReport(True, "reranked", outcome.method, outcome.model, len(head),
                                             time.perf_counter() - start)
