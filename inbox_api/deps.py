"""Per-request dependencies: one short database session, and the caller resolved once.

A script authenticates with `Authorization: Bearer <token>`; a browser with the session cookie,
and then every state-changing request must carry the session's CSRF token in `X-CSRF-Token`
(double submit is not needed: the token lives server-side with the session). Routes never look
at headers themselves; they receive a `Caller`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session

from core.caller import Caller
from core.db import get_engine, session_scope
from core.errors import Forbidden, Unauthenticated
from crm import auth

SESSION_COOKIE = "crm_inbox_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session() -> Iterator[Session]:
    """A unit of work per request: committed when the route returns, rolled back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


# scope="function": committed before the response is sent. FastAPI's default ("request") ends a
# yield dependency after the response, so a client could read its own change before the commit
# (seen: the page said "recalled" while the mail was still queued) and never hear of a failed one.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_caller(request: Request, session: SessionDep) -> Caller:
    return resolve_caller(request, session)


def resolve_caller(request: Request, session: Session) -> Caller:
    """The caller of a request (token, or session cookie + CSRF for changes)."""
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("invalid_credentials", "Sign in again: the credentials are not valid.")
        return auth.authenticate_token(session=session, token=token.strip())
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("not_signed_in", "Sign in first: this needs a session or an API token.")
    signed = auth.authenticate_session(session=session, session_id=cookie)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent, signed.csrf_token):
            raise Forbidden(
                "csrf_failed", "The request is missing its CSRF token: reload the page and try again."
            )
    return signed.caller


CallerDep = Annotated[Caller, Depends(get_caller, scope="function")]  # uses SessionDep: same scope


def caller_outside_request_session(request: Request) -> Caller:
    """For long-lived responses (the event stream): resolve the caller in a short session of its
    own, so no database session stays open for the stream's lifetime."""
    with session_scope() as session:
        return resolve_caller(request, session)
