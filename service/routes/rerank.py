"""POST /v1/rerank and /v2/rerank (Cohere/Jina shape): parse, call the rerank service, shape the answer."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request

from service.dependencies import require_api_key
from service.reranking import RerankService
from service.schemas.common import ERROR_RESPONSES
from service.schemas.rerank import (
    ApiVersion,
    RerankMeta,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankResultDocument,
    RerankUsage,
    TokenCount,
    document_text,
)
from service.timing import request_timings

router = APIRouter(tags=["rerank"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


def get_rerank_service(request: Request) -> RerankService:
    return request.app.state.rerank


async def _rerank(body: RerankRequest, request: Request, service: RerankService, version: str) -> RerankResponse:
    texts = [document_text(d) for d in body.documents]
    outcome = await service.rerank(body.query, texts, method=body.method, model=body.model, top_n=body.top_n,
                                   max_tokens_per_doc=body.max_tokens_per_doc, timings=request_timings(request))
    results = [RerankResult(index=i, relevance_score=outcome.scores[i],
                            document=RerankResultDocument(text=texts[i]) if body.return_documents else None)
               for i in outcome.order]
    meta = RerankMeta(api_version=ApiVersion(version=version), tokens=TokenCount(input_tokens=outcome.input_tokens),
                      warnings=outcome.warnings)
    return RerankResponse(id=str(uuid.uuid4()), results=results, model=outcome.model, method=outcome.method,
                          meta=meta, usage=RerankUsage(total_tokens=outcome.input_tokens))


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank_v1(body: RerankRequest, request: Request,
                    service: RerankService = Depends(get_rerank_service)) -> RerankResponse:
    """Rank `documents` by relevance to `query` (Cohere v1 / Jina clients)."""
    return await _rerank(body, request, service, "1")


@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank_v2(body: RerankRequest, request: Request,
                    service: RerankService = Depends(get_rerank_service)) -> RerankResponse:
    """The same ranking for Cohere's v2 client."""
    return await _rerank(body, request, service, "2")
