"""Collections endpoints: thin HTTP over `CollectionService` (validation and errors live there)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response

from indexing.collection import CollectionConfig, SearchResult
from service.collections import CollectionService
from service.dependencies import require_api_key
from service.errors import InvalidRequest, NotFound
from service.schemas.collections import (
    CollectionInfo,
    CollectionList,
    CreateCollectionRequest,
    DeleteDocumentsRequest,
    DeleteDocumentsResponse,
    DocumentList,
    HitChunk,
    MetadataIndexResponse,
    SearchBatchRequest,
    SearchBatchResponse,
    SearchGroup,
    SearchHit,
    SearchParamsUsed,
    SearchRequest,
    SearchRerankReport,
    SearchResponse,
    StoredDocument,
    UpdateMetadataRequest,
    UpdateMetadataResponse,
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


def resolved_name(name: str, request: Request) -> str:
    """The collection a path's `{name}` means: an alias is resolved once, at the start of the request,
    so every answer names the collection that served it."""
    return get_collection_service(request).resolve(name)


CollectionName = Annotated[str, Depends(resolved_name)]


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
        lexical_stemmer=body.lexical_stemmer,
    )
    config = service.chunking_for(config, body.chunk_tokens, body.chunk_overlap)
    return CollectionInfo(**await service.create(config, body.metadata_indexes))


@router.put("/{name}/metadata_indexes/{field}", response_model=MetadataIndexResponse)
async def create_metadata_index(
    name: CollectionName, field: str, response: Response, service: CollectionService = Depends(get_collection_service)
) -> MetadataIndexResponse:
    """Index a metadata field for filters: 201 when built, 200 when it was indexed already."""
    created, fields = await service.create_metadata_index(name, field)
    response.status_code = 201 if created else 200
    return MetadataIndexResponse(collection=name, field=field, created=created, metadata_indexes=fields)


@router.delete("/{name}/metadata_indexes/{field}", status_code=204)
async def drop_metadata_index(
    name: CollectionName, field: str, service: CollectionService = Depends(get_collection_service)
) -> Response:
    await service.drop_metadata_index(name, field)
    return Response(status_code=204)


@router.get("", response_model=CollectionList)
async def list_collections(service: CollectionService = Depends(get_collection_service)) -> CollectionList:
    return CollectionList(data=[CollectionInfo(**info) for info in service.list()])


@router.get("/{name}", response_model=CollectionInfo)
async def get_collection(
    name: CollectionName, service: CollectionService = Depends(get_collection_service)
) -> CollectionInfo:
    return CollectionInfo(**service.describe(name))


@router.delete("/{name}", status_code=204)
async def delete_collection(name: str, service: CollectionService = Depends(get_collection_service)) -> Response:
    await service.delete(name)
    return Response(status_code=204)


@router.post("/{name}/reload", response_model=CollectionInfo)
async def reload_collection(
    name: CollectionName, rebuild: bool = False, service: CollectionService = Depends(get_collection_service)
) -> CollectionInfo:
    """Re-open from disk (after `rrs index`); `rebuild=true` rebuilds the index from the store."""
    return CollectionInfo(**await service.reload(name, rebuild))


@router.post("/{name}/documents", response_model=UpsertResponse)
async def upsert_documents(
    name: CollectionName, body: UpsertRequest, service: CollectionService = Depends(get_collection_service)
) -> UpsertResponse:
    """Insert or replace documents; acknowledged only after the write is durable."""
    ids, truncated, unchanged = await service.upsert(name, body.documents)
    return UpsertResponse(collection=name, upserted=len(ids), ids=ids, truncated=truncated, unchanged=unchanged)


@router.patch("/{name}/documents", response_model=UpdateMetadataResponse)
async def update_metadata(
    name: CollectionName, body: UpdateMetadataRequest, service: CollectionService = Depends(get_collection_service)
) -> UpdateMetadataResponse:
    """Change documents' metadata without re-embedding them (ids not stored are listed, not created)."""
    updates = [(d.id, d.metadata) for d in body.documents]
    updated = set(await service.update_metadata(name, updates, body.merge))
    missing = [d.id for d in body.documents if d.id not in updated]
    return UpdateMetadataResponse(collection=name, updated=len(updated), missing=missing)


@router.delete("/{name}/documents", response_model=DeleteDocumentsResponse)
async def delete_documents(
    name: CollectionName, body: DeleteDocumentsRequest, service: CollectionService = Depends(get_collection_service)
) -> DeleteDocumentsResponse:
    """Delete by `ids`, or every document a metadata `filter` matches."""
    deleted = await service.delete_documents(name, body.ids, body.filter)
    return DeleteDocumentsResponse(collection=name, deleted=deleted)


def _filter_param(raw: str | None) -> dict[str, Any] | None:
    """The `filter` query parameter: a JSON object of `field: scalar`, as in a search body."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"filter: not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InvalidRequest("filter: must be a JSON object of field: value pairs")
    return value


@router.get("/{name}/documents", response_model=DocumentList)
async def list_documents(
    name: CollectionName,
    limit: int = Query(100, description="Documents per page (1..RRS_MAX_DOCUMENTS_PER_UPSERT)."),
    after: str | None = Query(None, description="Start after this id: the previous page's `next_after`."),
    filter: str | None = Query(None, description='Metadata equality filter as JSON, e.g. {"lang": "en"}.'),
    ids: list[str] | None = Query(None, description="Fetch these ids instead of a page (repeat the parameter)."),
    include_vectors: bool = False,
    service: CollectionService = Depends(get_collection_service),
) -> DocumentList:
    """Read documents back: a page in id order (keyset pagination), or the documents of `ids`."""
    if ids is not None:
        if after is not None or filter is not None:
            raise InvalidRequest("ids: cannot be combined with `after` or `filter`")
        found = await service.get_documents(name, ids, include_vectors)
        present = {d["id"] for d in found}
        return DocumentList(
            collection=name,
            data=[StoredDocument(**d) for d in found],
            missing=[i for i in dict.fromkeys(ids) if i not in present],
        )
    docs, next_after = await service.list_documents(name, limit, after, _filter_param(filter), include_vectors)
    return DocumentList(collection=name, data=[StoredDocument(**d) for d in docs], next_after=next_after)


@router.get("/{name}/documents/{doc_id:path}", response_model=StoredDocument)
async def get_document(
    name: CollectionName,
    doc_id: str,
    include_vectors: bool = False,
    service: CollectionService = Depends(get_collection_service),
) -> StoredDocument:
    found = await service.get_documents(name, [doc_id], include_vectors)
    if not found:
        raise NotFound(f"document {doc_id!r} not found in collection {name!r}")
    return StoredDocument(**found[0])


def _search_response(name: str, model: str, result: SearchResult, rerank_report: Any) -> SearchResponse:
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
    return SearchResponse(
        collection=name,
        model=model,
        hits=hits,
        candidates=result.candidates,
        filtered_count=result.filtered_count,
        filtered_count_exact=result.filtered_count_exact,
        min_relevance=result.min_relevance,
        relevance_filtered=result.relevance_filtered,
        score_filtered=result.score_filtered,
        rerank=SearchRerankReport(**vars(rerank_report)) if rerank_report is not None else None,
        groups=None if result.groups is None else [SearchGroup(value=v, ids=ids) for v, ids in result.groups],
        search_params=None if result.effort is None else SearchParamsUsed(
            index=result.effort.kind, ef=result.effort.ef, nprobe=result.effort.nprobe, exact=result.effort.exact,
            rescored=result.effort.rescored,
        ),
    )


@router.post("/{name}/search", response_model=SearchResponse)
async def search_collection(
    name: CollectionName,
    body: SearchRequest,
    request: Request,
    service: CollectionService = Depends(get_collection_service),
) -> Response:
    """Search by `query` text or `vector`; the Server-Timing header splits embed/search/rerank time."""
    coll = service.collection(name)  # `name` is resolved already: one lookup for the search and its model
    result, rerank_report = await service.search(coll.name, body, request_timings(request))
    response = _search_response(coll.name, coll.config.model, result, rerank_report)
    # Serialised once here: returning the model would validate it a second time (search is hot).
    return Response(response.model_dump_json(), media_type="application/json")


@router.post("/{name}/search/batch", response_model=SearchBatchResponse)
async def search_collection_batch(
    name: CollectionName,
    body: SearchBatchRequest,
    request: Request,
    service: CollectionService = Depends(get_collection_service),
) -> Response:
    """Many searches in one request: one embedding batch and multi-query index searches; answers as single ones."""
    coll = service.collection(name)
    answers = await service.search_batch(coll.name, body.searches, request_timings(request))
    model = coll.config.model
    response = SearchBatchResponse(
        collection=coll.name, model=model, results=[_search_response(coll.name, model, r, rep) for r, rep in answers]
    )
    return Response(response.model_dump_json(), media_type="application/json")
