"""Backup API shapes: consistent copies of a collection, and restores into a new one."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class BackupInfo(BaseModel):
    id: str = Field(..., description="`<collection>/<stamp>`: how restore and delete name it.")
    collection: str
    created_at: float
    documents: int = Field(..., description="Documents in the copy (the store as of one moment).")
    bytes: int
    calibrated: bool = Field(..., description="Whether the copy carries the collection's relevance calibration.")
    metadata_indexes: list[str] = Field(default_factory=list)
    index: str | None = Field(
        None, description="The ANN index kind whose snapshot the backup keeps (a restore loads it); null: "
        "none kept, a restore rebuilds the index from the stored vectors."
    )


class BackupRequest(BaseModel):
    include_index: bool = Field(
        True, description="Keep the ANN index snapshot, so a restore loads it instead of rebuilding the "
        "index (an HNSW index of 200k vectors: seconds instead of a minute; the backup grows by its size)."
    )


class BackupList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BackupInfo]


class RestoreRequest(BaseModel):
    name: str = Field(..., description="The new collection to restore into (must not exist).")
