"""Counting endpoints: how many documents a filter matches, and which values a field holds among them."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.collections import CollectionService
from service.dependencies import require_api_key
from service.routes.collections import CollectionName, get_collection_service
from service.schemas.collections import (
    CountRequest,
    CountResponse,
    FacetRequest,
    FacetResponse,
    FacetValueCount,
)
from service.schemas.common import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/collections",
    tags=["collections"],
    dependencies=[Depends(require_api_key)],
    responses=ERROR_RESPONSES,
)


@router.post("/{name}/count", response_model=CountResponse)
async def count_documents(
    name: CollectionName, body: CountRequest, service: CollectionService = Depends(get_collection_service)
) -> CountResponse:
    """The exact number of documents a filter matches (a search's `filtered_count` stops at 4,096)."""
    return CountResponse(collection=name, count=await service.count(name, body.filter))


@router.post("/{name}/facets", response_model=FacetResponse)
async def facet_values(
    name: CollectionName, body: FacetRequest, service: CollectionService = Depends(get_collection_service)
) -> FacetResponse:
    """The most frequent values of one metadata field among the documents a filter matches, with counts:
    what a search page shows as facets (an indexed field is counted from its index)."""
    values, distinct = await service.facets(name, body.field, body.filter, body.limit)
    return FacetResponse(collection=name, field=body.field, distinct=distinct,
                         values=[FacetValueCount(value=v.value, count=v.count) for v in values])
