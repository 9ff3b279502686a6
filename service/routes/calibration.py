"""Relevance calibration of a collection: GET/PUT/DELETE /v1/collections/{name}/calibration.

The payload is validated by `indexing.calibration.schema.CalibrationPayload` (422 when invalid);
a calibration fitted for another embedding model is refused with 409.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Response

from indexing.calibration.relevance import CalibrationError, ModelMismatch
from indexing.calibration.schema import CalibrationPayload
from indexing.calibration.serving import install_calibration, remove_calibration, stored_calibration
from service.collections import CollectionService
from service.dependencies import require_api_key
from service.errors import Conflict, NotFound, Unprocessable
from service.routes.collections import CollectionName
from service.routes.collections import get_collection_service as _service
from service.schemas.common import ERROR_RESPONSES

AUTH = [Depends(require_api_key)]
router = APIRouter(prefix="/v1/collections", tags=["collections"], dependencies=AUTH, responses=ERROR_RESPONSES)


@router.get("/{name}/calibration", response_model=CalibrationPayload)
async def get_calibration(name: CollectionName, service: CollectionService = Depends(_service)) -> dict[str, Any]:
    """The fitted calibration stored with the collection (404 when it has none)."""
    data = stored_calibration(service.collection(name))
    if data is None:
        raise NotFound(f"collection {name!r} has no relevance calibration; fit one with `rrs calibrate`")
    return data


@router.put("/{name}/calibration", response_model=CalibrationPayload)
async def put_calibration(
    name: CollectionName, body: CalibrationPayload, service: CollectionService = Depends(_service)
) -> dict[str, Any]:
    """Install (or replace) the calibration; persisted in the collection's manifest."""
    coll = service.collection(name)
    try:
        calibration = await anyio.to_thread.run_sync(install_calibration, coll, body.model_dump())
    except ModelMismatch as exc:
        raise Conflict(str(exc)) from None
    except CalibrationError as exc:
        raise Unprocessable(str(exc)) from None
    return calibration.to_dict()


@router.delete("/{name}/calibration", status_code=204)
async def delete_calibration(name: CollectionName, service: CollectionService = Depends(_service)) -> Response:
    """Remove the calibration: hits lose `relevance` and `min_relevance` becomes a 400."""
    await anyio.to_thread.run_sync(remove_calibration, service.collection(name))
    return Response(status_code=204)
