"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.dependencies import require_api_key

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict:
    """Process alive. Stays open without an API key, for load balancers and container checks."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """Ready only after a warm-up inference succeeded and while every worker is healthy."""
    checks: dict[str, bool] = {}
    for name, probe in request.app.state.readiness.items():
        try:
            checks[name] = bool(probe())
        except Exception:
            checks[name] = False
    ok = bool(checks) and all(checks.values())
    return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(require_api_key)])
async def metrics(request: Request) -> Response:
    """Prometheus text format; behind the API key when keys are configured (it reveals traffic)."""
    m = request.app.state.metrics
    emb = getattr(request.app.state, "embedding", None)
    if emb is not None:
        m.queue_depth.labels("embed").set(emb.batcher.depth)
    # Off the event loop: the per-collection gauges read each collection's store at scrape time.
    body = await anyio.to_thread.run_sync(generate_latest, m.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
