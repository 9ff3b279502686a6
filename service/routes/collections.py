"""Collections endpoints: thin HTTP over `CollectionService` (validation and errors live there)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from indexing.collection import CollectionConfig
from service.collections import CollectionService
from service.dependencies import require_api_key
from service.schemas.collections import (
    CollectionInfo,
    CollectionList,
    CreateCollectionRequest,
    DeleteDocumentsRequest,
    DeleteDocumentsResponse,
    HitChunk,
    SearchHit,
    SearchRequest,
    SearchRerankReport,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from service.schemas.common import ERROR_RESPONSES
from service.timing import request_timings

router = APIRouter(
    prefix="/v1/collections",
    tags=["collections"],
    dependencies=[Depends(require_api_key)],
    responses=ERROR_RESPONSES,
)


def get_collection_service(request: Request) -> CollectionService:
    return request.app.state.collections


@router.post("", response_model=CollectionInfo, status_code=201)
async def create_collection(
    body: CreateCollectionRequest, service: CollectionService = Depends(get_collection_service)
) -> CollectionInfo:
    config = CollectionConfig(
        body.name,
        body.model or service.embedding.space,
        body.dimension or service.embedding.dim,
        body.metric,
        body.index,
    )
    config = service.chunking_for(config, body.chunk_tokens, body.chunk_overlap)
    return CollectionInfo(**await service.create(config))


@router.get("", response_model=CollectionList)
async def list_collections(service: CollectionService = Depends(get_collection_service)) -> CollectionList:
    return CollectionList(data=[CollectionInfo(**info) for info in service.list()])


@router.get("/{name}", response_model=CollectionInfo)
async def get_collection(name: str, service: CollectionService = Depends(get_collection_service)) -> CollectionInfo:
    return CollectionInfo(**service.describe(name))


@router.delete("/{name}", status_code=204)
async def delete_collection(name: str, service: CollectionService = Depends(get_collection_service)) -> Response:
    await service.delete(name)
    return Response(status_code=204)


@router.post("/{name}/reload", response_model=CollectionInfo)
async def reload_collection(
    name: str, rebuild: bool = False, service: CollectionService = Depends(get_collection_service)
) -> CollectionInfo:
    """Re-open from disk (after `rrs index`); `rebuild=true` rebuilds the index from the store."""
    return CollectionInfo(**await service.reload(name, rebuild))


@router.post("/{name}/documents", response_model=UpsertResponse)
async def upsert_documents(
    name: str, body: UpsertRequest, service: CollectionService = Depends(get_collection_service)
) -> UpsertResponse:
    """Insert or replace documents; acknowledged only after the write is durable."""
    ids, truncated = await service.upsert(name, body.documents)
    return UpsertResponse(collection=name, upserted=len(ids), ids=ids, truncated=truncated)


@router.delete("/{name}/documents", response_model=DeleteDocumentsResponse)
async def delete_documents(
    name: str, body: DeleteDocumentsRequest, service: CollectionService = Depends(get_collection_service)
) -> DeleteDocumentsResponse:
    return DeleteDocumentsResponse(collection=name, deleted=await service.delete_documents(name, body.ids))


@router.post("/{name}/search", response_model=SearchResponse)
async def search_collection(
    name: str,
    body: SearchRequest,
    request: Request,
    service: CollectionService = Depends(get_collection_service),
) -> Response:
    """Search by `query` text or `vector`; the Server-Timing header splits embed/search/rerank time."""
    result, rerank_report = await service.search(name, body, request_timings(request))
    hits = [
        SearchHit(
            id=h.id,
            score=h.score,
            relevance=h.relevance,
            rerank_score=h.rerank_score,
            lexical_score=h.lexical_score,
            fused_score=h.fused_score,
            text=h.text,
            metadata=h.metadata,
            chunk=None if h.chunk is None else HitChunk(
                index=h.chunk.part, start=h.chunk.start, end=h.chunk.end, text=h.passage
            ),
        )
        for h in result.hits
    ]
    response = SearchResponse(
        collection=name,
        model=service.collection(name).config.model,
        hits=hits,
        candidates=result.candidates,
        filtered_count=result.filtered_count,
        min_relevance=result.min_relevance,
        relevance_filtered=result.relevance_filtered,
        rerank=SearchRerankReport(**vars(rerank_report)) if rerank_report is not None else None,
    )
    # Serialised once here: returning the model would validate it a second time (search is hot).
    return Response(response.model_dump_json(), media_type="application/json")
