"""The shared inbox web page: server-rendered shells (jinja2) whose small plain-JS script talks to
the same HTTP API scripts use. No CDN, no build step.

Security: every page is sent with a strict Content-Security-Policy (scripts and styles from this
origin only, no inline script, no plugins, no framing of our pages, remote images blocked); mail
HTML is rendered by the browser inside a sandboxed iframe (no scripts, opaque origin, no forms,
no top navigation) whose srcdoc inherits that policy. Sign-in forms carry a CSRF token bound to
a cookie (login CSRF), and every later change carries the session's token in a header.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import SecretStr
from sqlmodel import Session

from core.db import get_engine, session_scope
from core.errors import DomainError
from crm import auth, directory
from inbox_api.deps import SESSION_COOKIE

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "crm_inbox_login_csrf"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)


def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


def _signed_in(request: Request) -> tuple[auth.SessionCaller, directory.TeamMember | None] | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        with session_scope() as session:
            signed = auth.authenticate_session(session=session, session_id=cookie)
            return signed, directory.me(session=session, caller=signed.caller)
    except DomainError:
        return None


def _login_page(request: Request, error: str | None = None, email: str = "", status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html", {"csrf": token, "error": error, "email": email}, status_code=status
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return security_headers(response)


@router.get("/login")
def login_form(request: Request) -> Response:
    if _signed_in(request) is not None:
        return RedirectResponse("/", status_code=303)
    return _login_page(request)


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1000)],
    csrf: Annotated[str, Form(max_length=100)],
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, csrf):
        return _login_page(request, "The form expired: please sign in again.", email, 403)
    client = request.client.host if request.client else ""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            signed = auth.sign_in(
                session=session, email=email, password=SecretStr(password), client_address=client
            )
        except DomainError as exc:
            session.commit()  # a refused sign-in still counts towards the throttle
            return _login_page(request, exc.message, email, 429 if exc.code == "login_throttled" else 401)
        session.commit()
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        signed.session_id.get_secret_value(),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=int(auth.SESSION_MAX.total_seconds()),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=100)]) -> Response:
    signed = _signed_in(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if signed is not None and cookie and hmac.compare_digest(csrf, signed[0].csrf_token):
        with session_scope() as session:
            auth.sign_out(session=session, session_id=cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def inbox(request: Request) -> Response:
    signed = _signed_in(request)
    if signed is None:
        return RedirectResponse("/login", status_code=303)
    session_caller, me = signed
    context = {"csrf": session_caller.csrf_token, "me": me, "caller": session_caller.caller}
    return security_headers(templates.TemplateResponse(request, "inbox.html", context))


def _page(request: Request, template: str, **extra: object) -> Response:
    signed = _signed_in(request)
    if signed is None:
        return RedirectResponse("/login", status_code=303)
    session_caller, me = signed
    context = {"csrf": session_caller.csrf_token, "me": me, "caller": session_caller.caller, **extra}
    return security_headers(templates.TemplateResponse(request, template, context))


@router.get("/records/{kind}", response_class=HTMLResponse)
def record_list(request: Request, kind: str) -> Response:
    if kind not in ("contacts", "companies", "deals"):
        return security_headers(HTMLResponse("Not found", status_code=404))
    return _page(request, "records.html", kind=kind, record_id=None)


@router.get("/records/{kind}/{record_id}", response_class=HTMLResponse)
def record_page(request: Request, kind: str, record_id: int) -> Response:
    if kind not in ("contacts", "companies", "deals"):
        return security_headers(HTMLResponse("Not found", status_code=404))
    return _page(request, "records.html", kind=kind, record_id=record_id)


@router.get("/tickets", response_class=HTMLResponse)
def tickets_page(request: Request) -> Response:
    """The tickets of the conversations the reader sees (issue 13); data from /api/tickets."""
    return _page(request, "tickets.html")


@router.get("/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    signed = _signed_in(request)
    if signed is not None and not signed[0].caller.is_admin:
        # A member never sees admin pages (the API refuses them the data anyway).
        return security_headers(
            templates.TemplateResponse(
                request,
                "forbidden.html",
                {"csrf": signed[0].csrf_token, "me": signed[1], "caller": signed[0].caller},
                status_code=403,
            )
        )
    return _page(request, "admin.html")
