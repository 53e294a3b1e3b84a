"""Domain error codes -> HTTP. The domain says what went wrong (code, fields); this face picks
the status and the body `{"error": {"code", "message", "fields"}}`."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from core.errors import DomainError, ErrorKind

STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.NOT_FOUND: 404,  # missing and not visible alike
    ErrorKind.INVALID: 422,
    ErrorKind.CONFLICT: 409,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}
# Codes whose status is more precise than their kind's.
STATUS_BY_CODE: dict[str, int] = {
    "login_throttled": 429,
    "reset_throttled": 429,
    "csrf_failed": 403,
}


def status_of(error: DomainError) -> int:
    return STATUS_BY_CODE.get(error.code, STATUS_BY_KIND[error.kind])


def error_body(code: str, message: str, fields: dict[str, object] | None = None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "fields": fields or {}}}


async def domain_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    headers = {}
    throttled = exc.code in ("login_throttled", "reset_throttled")
    if throttled and "retry_after" in exc.fields:
        headers["Retry-After"] = str(exc.fields["retry_after"])
    if exc.kind is ErrorKind.UNAUTHENTICATED and not throttled:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        error_body(exc.code, exc.message, exc.fields), status_code=status_of(exc), headers=headers
    )
