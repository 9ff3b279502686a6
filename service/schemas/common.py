"""Shapes shared by every endpoint family."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Bad input (the message names the field and the reason)",
        401: "Missing or wrong API key",
        403: "A read-only API key on a call that changes data",
        404: "Unknown model or resource",
        409: "Name taken or in use (a collection or alias exists, an alias points at the collection)",
        413: "Too many inputs, too many tokens or too many bytes",
        422: "Malformed body (the message names the field)",
        503: "Queue full or not ready; see Retry-After",
    }.items()
}
