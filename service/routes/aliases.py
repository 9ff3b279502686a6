"""Alias endpoints: point a stable name at a collection (a reindex switches clients in one step)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from service.collections import CollectionService
from service.dependencies import require_api_key
from service.routes.collections import get_collection_service
from service.schemas.aliases import AliasInfo, AliasList, AliasRequest
from service.schemas.common import ERROR_RESPONSES

router = APIRouter(
    prefix="/v1/aliases", tags=["collections"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES
)


@router.get("", response_model=AliasList)
async def list_aliases(service: CollectionService = Depends(get_collection_service)) -> AliasList:
    return AliasList(data=[AliasInfo(alias=a, collection=c) for a, c in service.aliases().items()])


@router.put("/{alias}", response_model=AliasInfo)
async def point_alias(
    alias: str, body: AliasRequest, service: CollectionService = Depends(get_collection_service)
) -> AliasInfo:
    """Create the alias, or move it: requests that start after this answer go to `collection`."""
    previous = await service.point_alias(alias, body.collection)
    return AliasInfo(alias=alias, collection=body.collection, previous=previous)


@router.delete("/{alias}", status_code=204)
async def remove_alias(alias: str, service: CollectionService = Depends(get_collection_service)) -> Response:
    await service.remove_alias(alias)
    return Response(status_code=204)
