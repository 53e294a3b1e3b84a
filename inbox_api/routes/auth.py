"""Signing in and out (browser sessions), who am I, personal API tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field, SecretStr

from core.caller import Caller
from core.errors import Unauthenticated
from crm import auth, directory
from inbox_api.deps import SESSION_COOKIE, CallerDep, SessionDep

router = APIRouter(prefix="/api", tags=["authentication"])


class LoginIn(BaseModel):
    email: str = Field(max_length=320)
    password: SecretStr = Field(max_length=1000)


class LoginOut(BaseModel):
    caller: Caller
    csrf_token: str = Field(description="Send it back in X-CSRF-Token on every state-changing request.")
    expires_at: datetime


class TokenIn(BaseModel):
    name: str = Field(default="", max_length=100)
    user_id: int | None = Field(default=None, description="Admins may create a token for another user.")


class TokenCreatedOut(BaseModel):
    token: auth.TokenView
    secret: str = Field(description="The whole token. Shown once: store it now.")


@router.post("/auth/login", summary="Sign in with e-mail and password (sets the session cookie)")
def login(body: LoginIn, request: Request, response: Response, session: SessionDep) -> LoginOut:
    client = request.client.host if request.client else ""
    try:
        signed = auth.sign_in(
            session=session, email=body.email, password=body.password, client_address=client
        )
    except Unauthenticated:
        session.commit()  # the failure count is the point of a refused sign-in
        raise
    response.set_cookie(
        SESSION_COOKIE,
        signed.session_id.get_secret_value(),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=int(auth.SESSION_MAX.total_seconds()),
        path="/",
    )
    return LoginOut(caller=signed.caller, csrf_token=signed.csrf_token, expires_at=signed.expires_at)


@router.post("/auth/logout", status_code=204, summary="Sign out (ends this browser session)")
def logout(request: Request, response: Response, session: SessionDep, caller: CallerDep) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        auth.sign_out(session=session, session_id=cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", summary="The signed-in user (tenant, user id, role)")
def me(caller: CallerDep) -> Caller:
    return caller


@router.get("/tokens", summary="My API tokens (never their secrets)")
def list_tokens(session: SessionDep, caller: CallerDep, user_id: int | None = None) -> list[auth.TokenView]:
    return list(auth.list_tokens(session=session, caller=caller, user_id=user_id or caller.user_id or 0))


@router.post("/tokens", status_code=201, summary="Create a personal API token (its secret is shown once)")
def create_token(session: SessionDep, caller: CallerDep, body: Annotated[TokenIn, Body()]) -> TokenCreatedOut:
    created = auth.create_token(
        session=session, caller=caller, user_id=body.user_id or caller.user_id or 0, name=body.name
    )
    return TokenCreatedOut(token=created.token, secret=created.secret.get_secret_value())


@router.delete("/tokens/{token_id}", summary="Revoke an API token")
def revoke_token(token_id: int, session: SessionDep, caller: CallerDep) -> auth.TokenView:
    return auth.revoke_token(session=session, caller=caller, token_id=token_id)


@router.get("/team", summary="The users of my tenant (names for assignees and mentions)")
def team(session: SessionDep, caller: CallerDep) -> list[directory.TeamMember]:
    return list(directory.team(session=session, caller=caller))
