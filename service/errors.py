"""The service's exception hierarchy, mapped to HTTP once, in `install_error_handlers`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error a client can act on; `status` and `type` go straight into the response."""

    status: int = 400
    type: str = "invalid_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class InvalidRequest(ServiceError):
    status, type = 400, "invalid_request"


class Unauthorized(ServiceError):
    status, type = 401, "unauthorized"


class Forbidden(ServiceError):
    status, type = 403, "forbidden"


class NotFound(ServiceError):
    status, type = 404, "not_found"


class Conflict(ServiceError):
    status, type = 409, "conflict"


class PayloadTooLarge(ServiceError):
    status, type = 413, "payload_too_large"


class Unprocessable(ServiceError):
    status, type = 422, "validation_error"


class Overloaded(ServiceError):
    """Admission refused: the queue is full. Clients should back off for `retry_after` seconds."""

    status, type = 503, "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


class ServiceUnavailable(ServiceError):
    status, type = 503, "unavailable"


class DeadlineExceeded(ServiceError):
    status, type = 504, "deadline_exceeded"


def error_body(type_: str, message: str) -> dict:
    return {"error": {"type": type_, "message": message}}


def _field_path(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc.type, exc.message), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        msgs = []
        for err in exc.errors()[:10]:
            msgs.append(f"{_field_path(tuple(err.get('loc', ())))}: {err.get('msg', 'invalid')}")
        return JSONResponse(error_body("validation_error", "; ".join(msgs) or "invalid request body"),
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        kind = kinds.get(exc.status_code, "http_error")
        return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Never leak a stack trace to the client; the log has it.
        log.exception("unhandled error: %s", exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
