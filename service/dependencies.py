"""FastAPI dependencies: settings, services and API-key auth, all read from app state."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.embedding import EmbeddingService
from service.errors import Forbidden, Unauthorized
from service.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_embedding_service(request: Request) -> EmbeddingService:
    return request.app.state.embedding


# The calls a read-only key may make besides GETs: they compute answers and change nothing.
READ_ONLY_POSTS = frozenset({
    "/v1/embeddings",
    "/v1/rerank",
    "/v2/rerank",
    "/v1/collections/{name}/search",
    "/v1/collections/{name}/search/batch",
    "/v1/collections/{name}/count",
    "/v1/collections/{name}/facets",
})


def _matches(token: bytes, keys: list[str]) -> bool:
    """Compare against every key without short-circuiting, in constant time per key."""
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(token, key.encode())
    return ok


def require_api_key(request: Request) -> None:
    """Bearer-token check against RRS_API_KEYS (every call) and RRS_READ_ONLY_API_KEYS (GETs and the
    calls in READ_ONLY_POSTS; anything else is a 403); a no-op when neither is configured."""
    settings = request.app.state.settings
    keys: list[str] = settings.api_keys
    read_only: list[str] = settings.read_only_api_keys
    if not keys and not read_only:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'",
                           headers={"WWW-Authenticate": "Bearer"})
    given = token.strip().encode()
    full, reader = _matches(given, keys), _matches(given, read_only)  # both lists, always
    if full:
        return
    if not reader:
        raise Unauthorized("invalid API key", headers={"WWW-Authenticate": "Bearer"})
    route = request.scope.get("route")
    template = getattr(route, "path", request.url.path)
    if request.method not in ("GET", "HEAD") and template not in READ_ONLY_POSTS:
        raise Forbidden(f"this API key is read-only: {request.method} {template} changes data "
                        "(use a key of RRS_API_KEYS)")
