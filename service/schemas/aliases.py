"""Alias API shapes: a stable name pointing at a collection, moved in one step."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class AliasRequest(BaseModel):
    collection: str = Field(..., description="The collection the alias points at from now on.")


class AliasInfo(BaseModel):
    alias: str
    collection: str
    previous: str | None = Field(None, description="The collection it pointed at before this call, if any.")


class AliasList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AliasInfo]
