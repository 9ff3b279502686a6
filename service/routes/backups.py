"""Backup endpoints: copy a collection while it serves, list the copies, restore one as a new collection."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import StreamingResponse

from service.collections import CollectionService
from service.dependencies import require_api_key
from service.routes.collections import CollectionName, get_collection_service
from service.schemas.backups import BackupInfo, BackupList, BackupRequest, RestoreRequest
from service.schemas.collections import CollectionInfo
from service.schemas.common import ERROR_RESPONSES

router = APIRouter(tags=["collections"], dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)


@router.post("/v1/collections/{name}/backups", response_model=BackupInfo, status_code=201)
async def create_backup(
    name: CollectionName, body: BackupRequest | None = None,
    service: CollectionService = Depends(get_collection_service),
) -> BackupInfo:
    """Copy the collection's store as of one moment, and its index snapshot; writes go on meanwhile
    (RRS_BACKUP_DIR)."""
    return BackupInfo(**await service.backup(name, (body or BackupRequest()).include_index))


@router.get("/v1/backups", response_model=BackupList)
async def list_backups(
    collection: str | None = Query(None, description="Only the backups of this collection."),
    service: CollectionService = Depends(get_collection_service),
) -> BackupList:
    return BackupList(data=[BackupInfo(**b) for b in service.backups(collection)])


@router.post("/v1/backups/{collection}/{stamp}/restore", response_model=CollectionInfo, status_code=201)
async def restore_backup(
    collection: str, stamp: str, body: RestoreRequest, service: CollectionService = Depends(get_collection_service)
) -> CollectionInfo:
    """A new collection from the backup: its index snapshot loaded and later writes replayed, or, for a
    backup without one, the index rebuilt from the stored vectors (no re-embedding)."""
    return CollectionInfo(**await service.restore(f"{collection}/{stamp}", body.name))


@router.get("/v1/backups/{collection}/{stamp}/archive", response_class=StreamingResponse,
            responses={200: {"content": {"application/x-tar": {}}, "description": "The backup folder as a tar file."}})
async def download_backup(
    collection: str, stamp: str, service: CollectionService = Depends(get_collection_service)
) -> StreamingResponse:
    """The backup as a tar stream: extract it anywhere, then `rrs restore --backup <folder>`."""
    length, body = service.backup_archive(f"{collection}/{stamp}")
    name = f"{collection}-{stamp}.tar"
    return StreamingResponse(body, media_type="application/x-tar", headers={
        "content-length": str(length), "content-disposition": f'attachment; filename="{name}"'})


@router.delete("/v1/backups/{collection}/{stamp}", status_code=204)
async def delete_backup(
    collection: str, stamp: str, service: CollectionService = Depends(get_collection_service)
) -> Response:
    await service.delete_backup(f"{collection}/{stamp}")
    return Response(status_code=204)
