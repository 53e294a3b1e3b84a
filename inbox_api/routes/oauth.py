"""Connecting mailboxes by OAuth2 consent (Google, Microsoft 365, generic providers).

`POST /api/oauth/start` returns the provider's URL; the browser goes there, the user allows
access, the provider sends the browser back to `GET /api/oauth/callback`, which finishes the
connection and redirects to the admin page. The consent's state is bound to the credential the
start was made with (the session cookie, or the API token), so the callback only works for the
same browser or client. No token ever leaves the server: not in a response, not in a redirect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from core.db import session_scope
from core.errors import DomainError, Unauthenticated
from core.oauth import configured_providers
from core.secrets import SecretBox
from core.settings import get_settings
from inbox_api.deps import SESSION_COOKIE, CallerDep, SessionDep
from sync import oauth_flow

router = APIRouter(prefix="/api", tags=["oauth"])


@dataclass(frozen=True, slots=True)
class ProviderView:
    name: str
    label: str


class StartIn(BaseModel):
    provider: str = Field(min_length=1, max_length=32)
    account_id: int | None = Field(default=None, description="Reconnect this account (None: a new one)")


@dataclass(frozen=True, slots=True)
class StartOut:
    authorization_url: str
    expires_in: int


def _binding(request: Request) -> str:
    """What the consent is bound to: the credential this request was authenticated with."""
    header = request.headers.get("authorization", "")
    if header:
        return "token:" + header.partition(" ")[2].strip()
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        raise Unauthenticated("not_signed_in", "Sign in first: this needs a session or an API token.")
    return "session:" + cookie


def redirect_uri(request: Request) -> str:
    configured = get_settings().oauth_redirect_url
    return configured or str(request.url_for("oauth_callback"))


@router.get("/oauth/providers", summary="The OAuth providers mailboxes can be connected with")
def providers(caller: CallerDep) -> list[ProviderView]:
    return [ProviderView(name=p.name, label=p.label) for p in configured_providers()]


@router.post("/oauth/start", summary="Start connecting a mailbox by consent: the provider's URL to open")
def start(body: StartIn, request: Request, session: SessionDep, caller: CallerDep) -> StartOut:
    session.commit()
    started = oauth_flow.start(
        sessions=session_scope,
        caller=caller,
        provider=body.provider,
        redirect_uri=redirect_uri(request),
        binding=_binding(request),
        box=SecretBox.from_settings(),
        account_id=body.account_id,
    )
    return StartOut(authorization_url=started.authorization_url, expires_in=started.expires_in)


@router.get(
    "/oauth/callback",
    name="oauth_callback",
    summary="Where the provider sends the browser back: connects the mailbox, then the admin page",
    response_class=RedirectResponse,
    status_code=303,
)
def callback(
    request: Request,
    session: SessionDep,
    caller: CallerDep,
    state: Annotated[str, Query(max_length=200)] = "",
    code: Annotated[str | None, Query(max_length=4000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> RedirectResponse:
    session.commit()
    try:
        result = oauth_flow.complete(
            sessions=session_scope,
            caller=caller,
            state=state,
            code=code,
            error=error,
            binding=_binding(request),
            box=SecretBox.from_settings(),
        )
    except DomainError as exc:
        # Only the code travels in the URL; the page words it (and the account shows details).
        return RedirectResponse("/admin?" + urlencode({"oauth_error": exc.code}), status_code=303)
    return RedirectResponse("/admin?" + urlencode({"oauth_connected": result.account.id}), status_code=303)


@router.post(
    "/accounts/{account_id}/oauth/disconnect",
    summary="Disconnect an OAuth mailbox: revoke its tokens at the provider and forget them (admins)",
)
def disconnect(account_id: int, session: SessionDep, caller: CallerDep) -> oauth_flow.DisconnectResult:
    session.commit()
    return oauth_flow.disconnect(
        sessions=session_scope, caller=caller, account_id=account_id, box=SecretBox.from_settings()
    )
