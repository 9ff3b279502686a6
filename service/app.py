"""The app factory: wires settings, lifespan (models, queues, collections), middleware and routers."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.admission import AdmissionMiddleware
from service.cascade import CascadePolicy, RerankCascade
from service.collections import CollectionService
from service.docs import install_offline_docs
from service.embedding import EmbeddingService
from service.errors import install_error_handlers
from service.metrics import Metrics
from service.middleware import BodySizeLimitMiddleware, TimingMiddleware
from service.reranking import RerankService
from service.routes import aliases, backups, calibration, collections, embeddings, facets, feedback, health, rerank
from service.settings import Settings

log = logging.getLogger("rrs")


def _lifespan(settings: Settings):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        # Expensive objects are built here, off the event loop, and torn down in reverse order.
        embedding = await anyio.to_thread.run_sync(EmbeddingService, settings, app.state.metrics)
        embedding.start()
        app.state.embedding = embedding
        app.state.readiness["embedding"] = lambda: embedding.ready
        try:
            await embedding.warmup()
            log.info("embedder %s ready (dim %d)", embedding.model_name, embedding.dim)
            app.state.rerank = RerankService(settings, app.state.metrics, embedding)
            if settings.load_reranker_at_startup:
                await app.state.rerank.preload()
            collection_service = CollectionService(settings, embedding)
            collection_service.rerank_stage = RerankCascade(
                app.state.rerank,
                CascadePolicy(settings.cascade_skip_separated, settings.cascade_low, settings.cascade_high),
                settings.rerank_timeout_s,
            )
            app.state.collections = collection_service
            app.state.metrics.watch_collections(collection_service.gauges)
            app.state.readiness["collections"] = lambda: collection_service.ready
            try:
                await collection_service.start()
                yield
            finally:
                await anyio.to_thread.run_sync(collection_service.stop)
                app.state.rerank.close()
        finally:
            embedding.stop()

    return lifespan


def _apply_network_policy(settings: Settings) -> None:
    """No telemetry ever; no hub traffic unless the operator turned offline mode off."""
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _apply_network_policy(settings)
    app = FastAPI(
        title="rrs",
        version="0.1.0",
        summary="Retrieve, rerank, serve: embeddings, search with calibrated relevance, reranking.",
        lifespan=_lifespan(settings),
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.readiness = {}

    install_error_handlers(app)
    install_offline_docs(app)
    app.include_router(health.router)
    app.include_router(embeddings.router)
    app.include_router(collections.router)
    app.include_router(facets.router)
    app.include_router(aliases.router)
    app.include_router(backups.router)
    app.include_router(calibration.router)
    app.include_router(feedback.router)
    app.include_router(rerank.router)

    # Middleware: the last added runs first (outermost).
    app.add_middleware(AdmissionMiddleware, max_inflight=settings.max_inflight_requests, metrics=app.state.metrics,
                       retry_after_s=settings.overload_retry_after_s)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(TimingMiddleware, metrics=app.state.metrics)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory service.app:app_from_env` (settings from RRS_* variables)."""
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)
