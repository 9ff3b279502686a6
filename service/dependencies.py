"""FastAPI dependencies: settings, services and API-key auth, all read from app state."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.embedding import EmbeddingService
from service.errors import Unauthorized
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_embedding_service(request: Request) -> EmbeddingService:
    return request.app.state.embedding


def require_api_key(request: Request) -> None:
    """Bearer-token check against RRS_API_KEYS; a no-op when no keys are configured."""
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    # Compare against every key without short-circuiting, in constant time per key.
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token.strip().encode(), key.encode())
    if not ok:
        raise Unauthorized("invalid API key", headers={"WWW-Authenticate": "Bearer"})
