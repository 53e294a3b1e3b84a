"""Forgotten passwords over the API and as pages (`crm.password_reset`).

Nobody is signed in here, so the browser forms carry a CSRF token bound to a SameSite=Strict
cookie (as the sign-in form does); the API needs none: its confirm call carries the link's own
256-bit token, which a cross-site page cannot know. The link opens a page that only shows a
form (GET changes nothing: mail scanners fetch links); the password is set by its POST.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, SecretStr

from core.db import session_scope
from core.errors import DomainError
from crm import auth, password_reset
from inbox_api.deps import SessionDep

router = APIRouter(tags=["authentication"])
pages = APIRouter(include_in_schema=False)
RESET_CSRF_COOKIE = "crm_inbox_reset_csrf"


class ResetRequestIn(BaseModel):
    email: str = Field(min_length=1, max_length=320)


class ResetIn(BaseModel):
    token: str = Field(min_length=10, max_length=200)
    password: SecretStr = Field(max_length=1000, description="Write-only")


def _client(request: Request) -> str:
    return request.client.host if request.client else ""


@router.post(
    "/api/auth/password-reset",
    status_code=202,
    summary="Ask for a password-reset link by e-mail (the same answer for any address)",
)
def request_reset(
    body: ResetRequestIn, request: Request, session: SessionDep
) -> password_reset.ResetRequested:
    return password_reset.request_reset(session=session, email=body.email, client_address=_client(request))


@router.post(
    "/api/auth/password-reset/confirm",
    summary="Set a new password with a reset link's token (ends the user's browser sessions)",
)
def confirm_reset(body: ResetIn, session: SessionDep) -> password_reset.ResetDone:
    return password_reset.reset_password(session=session, token=body.token, password=body.password)


# ---------------------------------------------------------------------------------------------
# Pages


def _page(request: Request, mode: str, status: int = 200, **context: Any) -> Response:
    from inbox_api.web import security_headers, templates

    csrf = secrets.token_urlsafe(24)
    title = "Choose a new password" if mode == "choose" else "Forgot your password"
    values = {"mode": mode, "csrf": csrf, "title": title, "minimum": auth.MIN_PASSWORD_LENGTH}
    values.update({"error": None, "notice": None, "email": "", "token": "", **context})
    response = templates.TemplateResponse(request, "password_reset.html", values, status_code=status)
    response.set_cookie(
        RESET_CSRF_COOKIE,
        csrf,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return security_headers(response)


def _csrf_ok(request: Request, sent: str) -> bool:
    expected = request.cookies.get(RESET_CSRF_COOKIE, "")
    return bool(expected) and hmac.compare_digest(expected, sent)


@pages.get("/forgot-password")
def forgot_form(request: Request) -> Response:
    return _page(request, "ask")


@pages.post("/forgot-password")
def forgot_submit(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    if not _csrf_ok(request, csrf):
        return _page(request, "ask", 403, error="The form expired: please try again.", email=email)
    try:
        with session_scope() as session:
            done = password_reset.request_reset(session=session, email=email, client_address=_client(request))
    except DomainError as exc:
        status = 429 if exc.code == "reset_throttled" else 422
        return _page(request, "ask", status, error=exc.message, email=email)
    return _page(request, "sent", notice=done.message)


@pages.get("/reset-password")
def reset_form(request: Request, token: str = "") -> Response:
    try:
        with session_scope() as session:
            email = password_reset.check_link(session=session, token=token)
    except DomainError as exc:
        return _page(request, "invalid", 400, error=exc.message)
    return _page(request, "choose", email=email, token=token[:200])


@pages.post("/reset-password")
def reset_submit(
    request: Request,
    token: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    confirm: Annotated[str, Form(max_length=1000)],
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    try:
        with session_scope() as session:
            email = password_reset.check_link(session=session, token=token)
    except DomainError as exc:
        return _page(request, "invalid", 400, error=exc.message)
    if not _csrf_ok(request, csrf):
        return _page(
            request, "choose", 403, error="The form expired: please try again.", email=email, token=token
        )
    if not hmac.compare_digest(password.encode(), confirm.encode()):
        return _page(request, "choose", 422, error="The two passwords differ.", email=email, token=token)
    try:
        with session_scope() as session:
            password_reset.reset_password(session=session, token=token, password=SecretStr(password))
    except DomainError as exc:
        mode = "choose" if exc.code == "password_too_short" else "invalid"
        return _page(request, mode, 422, error=exc.message, email=email, token=token)
    response = _page(request, "done", notice="Your password was changed. Sign in with it now.")
    from inbox_api.deps import SESSION_COOKIE

    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
