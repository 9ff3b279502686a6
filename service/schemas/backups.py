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


class BackupList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BackupInfo]


class RestoreRequest(BaseModel):
    name: str = Field(..., description="The new collection to restore into (must not exist).")
