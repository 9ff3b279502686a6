"""Relevance feedback on a collection: POST/GET/DELETE /v1/collections/{name}/feedback.

Applications record graded judgments of search hits; `rrs calibrate --feedback` fits the
collection's relevance calibration from them (indexing/feedback.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.collections import CollectionService
from service.dependencies import require_api_key
from service.routes.collections import CollectionName
from service.routes.collections import get_collection_service as _service
from service.schemas.common import ERROR_RESPONSES
from service.schemas.feedback import FeedbackCleared, FeedbackRequest, FeedbackResponse, FeedbackSummary

AUTH = [Depends(require_api_key)]
router = APIRouter(prefix="/v1/collections", tags=["feedback"], dependencies=AUTH, responses=ERROR_RESPONSES)


@router.post("/{name}/feedback", response_model=FeedbackResponse)
async def record_feedback(name: CollectionName, body: FeedbackRequest,
                          service: CollectionService = Depends(_service)) -> FeedbackResponse:
    """Store graded judgments of one query's hits (durable before the response)."""
    query_id, summary = await service.record_feedback(name, body)
    return FeedbackResponse(collection=name, query_id=query_id, recorded=len(body.judgments), **summary)


@router.get("/{name}/feedback", response_model=FeedbackSummary)
async def feedback_summary(name: CollectionName, service: CollectionService = Depends(_service)) -> FeedbackSummary:
    return FeedbackSummary(collection=name, **await service.feedback_summary(name))


@router.delete("/{name}/feedback", response_model=FeedbackCleared)
async def clear_feedback(name: CollectionName, service: CollectionService = Depends(_service)) -> FeedbackCleared:
    return FeedbackCleared(collection=name, deleted=await service.clear_feedback(name))
