"""The shared inbox HTTP API. Thin: each route resolves the caller (deps), calls one service and
returns its view; domain error codes become statuses in one handler (errors)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError
from starlette.requests import Request

from core.errors import DomainError
from inbox_api import web
from inbox_api.errors import domain_error_handler, error_body
from inbox_api.routes import (
    admin,
    assignment,
    auth,
    conversations,
    events,
    forwarding,
    media,
    oauth,
    outbound,
    password_reset,
    records,
    sending,
    threads,
)


async def _validation_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"), "message": err.get("msg", "")}
        for err in exc.errors()
    ]
    return JSONResponse(
        error_body("invalid_request", "Some fields are not valid.", {"problems": problems}), status_code=422
    )


async def _out_of_range_handler(_request: Request, _exc: Exception) -> JSONResponse:
    """A number the database cannot hold (an id past 2^31 on PostgreSQL, 2^63 on SQLite) or a
    value it refuses as data: the client's input, never a server error."""
    return JSONResponse(
        error_body("invalid_request", "A value in the request is out of range.", {}), status_code=422
    )


def create_app() -> FastAPI:
    app = FastAPI(
        title="crm-inbox",
        summary="Shared inbox CRM: conversations, records and administration, scoped to the caller.",
        version="0.1.0",
    )
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(OverflowError, _out_of_range_handler)
    app.add_exception_handler(DataError, _out_of_range_handler)
    app.include_router(auth.router)
    app.include_router(threads.router)
    app.include_router(conversations.router)
    app.include_router(events.router)
    app.include_router(assignment.router)
    app.include_router(admin.router)
    app.include_router(oauth.router)
    app.include_router(records.router)
    app.include_router(outbound.router)
    app.include_router(forwarding.router)
    app.include_router(sending.router)
    app.include_router(media.router)
    app.include_router(password_reset.router)
    app.include_router(password_reset.pages)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=str(web.HERE / "static")), name="static")
    return app
