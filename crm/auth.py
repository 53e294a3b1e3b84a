"""Who is calling: passwords, personal API tokens, browser sessions, throttled sign-in.

Faces call `authenticate_token` / `authenticate_session` once per request and pass the `Caller`
they get to every service. A deactivated user is refused on the next request, whatever token or
session they hold, because both checks read the user row.

Secrets: passwords are hashed with argon2 (pwdlib); tokens and session ids are 256 random bits,
stored as SHA-256 (a fast hash is right for random values: there is nothing to guess), compared
by looking the hash up. The plain token is returned exactly once, when it is created.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from pwdlib import PasswordHash
from pydantic import SecretStr
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput, Unauthenticated, not_found
from core.types import utcnow
from crm import access
from crm.models import ApiToken, LoginFailure, User, UserPassword, WebSession

TOKEN_PREFIX = "crmi_"
MIN_PASSWORD_LENGTH = 10
SESSION_IDLE = timedelta(hours=12)
SESSION_MAX = timedelta(days=7)
# Sign-in throttling: this many failures within the window lock the key for LOCK_FOR.
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCK_FOR = timedelta(minutes=15)
# last_used_at is written at most this often (a busy script must not turn reads into writes).
TOKEN_TOUCH = timedelta(minutes=1)

_hasher = PasswordHash.recommended()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the address is unknown, so a wrong address costs what a wrong
    password costs. Made on first use, not at import: argon2 takes ~64 MiB and a good part of
    a second, which every CLI command (`sync --once` too) would pay for nothing."""
    return _hasher.hash("not-a-password-anyone-has")


@dataclass(frozen=True, slots=True)
class TokenView:
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class TokenCreated:
    token: TokenView
    secret: SecretStr  # the whole token, shown once


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new browser session: the cookie value and the CSRF token the page sends back."""

    caller: Caller
    session_id: SecretStr
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionCaller:
    caller: Caller
    csrf_token: str


def digest(value: str) -> str:
    """SHA-256 of a random secret (token, session id, reset link), as stored."""
    return _digest(value)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _self_or_admin(session: Session, caller: Caller, user_id: int, action: str) -> User:
    user = access.get_user(session, caller, user_id)
    if caller.user_id != user_id:
        access.require_admin(caller, action)
    return user


# ---------------------------------------------------------------------------------------------
# Passwords


def set_password(*, session: Session, caller: Caller, user_id: int, password: SecretStr) -> None:
    """A user sets their own password; an admin sets anyone's in the tenant."""
    user = _self_or_admin(session, caller, user_id, "set another user's password")
    store_password(session, user.id or 0, password)


def check_password_rule(password: SecretStr) -> str:
    """The one strength rule (user add, set-password, reset): the plain value when it passes."""
    value = password.get_secret_value()
    if len(value) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(
            "password_too_short",
            f"A password needs at least {MIN_PASSWORD_LENGTH} characters.",
            field="password",
            minimum=MIN_PASSWORD_LENGTH,
        )
    return value


def store_password(session: Session, user_id: int, password: SecretStr) -> None:
    """Hash and store a password that passed `check_password_rule` (checked again here)."""
    value = check_password_rule(password)
    row = session.get(UserPassword, user_id)
    if row is None:
        row = UserPassword(user_id=user_id, password_hash="")
    row.password_hash = _hasher.hash(value)
    row.updated_at = utcnow()
    session.add(row)
    session.flush()


# ---------------------------------------------------------------------------------------------
# API tokens


def _token_view(row: ApiToken) -> TokenView:
    return TokenView(
        id=row.id or 0,
        user_id=row.user_id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked_at is not None,
    )


def create_token(*, session: Session, caller: Caller, user_id: int, name: str = "") -> TokenCreated:
    user = _self_or_admin(session, caller, user_id, "create a token for another user")
    if not user.active:
        raise InvalidInput("user_inactive", f"{user.email} is deactivated.", user_id=user_id)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        tenant_id=user.tenant_id,
        user_id=user.id or 0,
        name=name.strip()[:100],
        token_hash=_digest(secret),
        prefix=secret[: len(TOKEN_PREFIX) + 6],
    )
    session.add(row)
    session.flush()
    return TokenCreated(token=_token_view(row), secret=SecretStr(secret))


def list_tokens(*, session: Session, caller: Caller, user_id: int) -> tuple[TokenView, ...]:
    _self_or_admin(session, caller, user_id, "list another user's tokens")
    rows = session.exec(select(ApiToken).where(ApiToken.user_id == user_id).order_by(col(ApiToken.id))).all()
    return tuple(_token_view(r) for r in rows)


def revoke_token(*, session: Session, caller: Caller, token_id: int) -> TokenView:
    row = session.get(ApiToken, token_id)
    if (
        row is None
        or row.tenant_id != caller.tenant_id
        or (row.user_id != caller.user_id and not caller.is_admin)
    ):
        raise not_found("token", token_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        session.flush()
    return _token_view(row)


def _bad_credentials() -> Unauthenticated:
    return Unauthenticated("invalid_credentials", "Sign in again: the credentials are not valid.")


def authenticate_token(*, session: Session, token: str) -> Caller:
    """The caller behind an `Authorization: Bearer` token; the same refusal whatever is wrong."""
    if not token.startswith(TOKEN_PREFIX):
        raise _bad_credentials()
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
    if row is None or row.revoked_at is not None:
        raise _bad_credentials()
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise _bad_credentials()
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > TOKEN_TOUCH:
        row.last_used_at = now
        session.add(row)
    return access.caller_of(user)


# ---------------------------------------------------------------------------------------------
# Browser sessions and throttled sign-in


def _failure_row(session: Session, key: str) -> LoginFailure | None:
    return session.exec(select(LoginFailure).where(LoginFailure.key == key)).first()


def _check_throttle(session: Session, keys: list[str]) -> None:
    now = utcnow()
    for key in keys:
        row = _failure_row(session, key)
        if row is not None and row.locked_until is not None and row.locked_until > now:
            seconds = int((row.locked_until - now).total_seconds()) + 1
            raise Unauthenticated(
                "login_throttled",
                f"Too many failed sign-ins: try again in {seconds} seconds.",
                retry_after=seconds,
            )


def _record_failure(session: Session, keys: list[str]) -> None:
    now = utcnow()
    for key in keys:
        row = _failure_row(session, key)
        if row is None:
            row = LoginFailure(key=key, failures=0, window_started_at=now)
        if now - row.window_started_at > FAILURE_WINDOW:
            row.failures, row.window_started_at, row.locked_until = 0, now, None
        row.failures += 1
        if row.failures >= MAX_FAILURES:
            row.locked_until = now + LOCK_FOR
        session.add(row)
    session.flush()


def sign_in(*, session: Session, email: str, password: SecretStr, client_address: str = "") -> SignedIn:
    """E-mail + password -> a new browser session. Failures are counted per address signed in
    to and per client address; either one locked refuses before the password is even checked.

    The caller must commit even when this raises `invalid_credentials` (the failure count is the
    point); `login_throttled` writes nothing."""
    address = email.strip().lower()
    keys = [f"email:{address}"] + ([f"ip:{client_address}"] if client_address else [])
    _check_throttle(session, keys)
    users = session.exec(
        select(User).where(User.email == address, col(User.active).is_(True)).order_by(col(User.id))
    ).all()
    value = password.get_secret_value()
    matched: User | None = None
    for user in users:
        stored = session.get(UserPassword, user.id)
        if stored is not None and _hasher.verify(value, stored.password_hash):
            matched = user
            break
    if not users:
        _hasher.verify(value, _dummy_hash())
    if matched is None:
        _record_failure(session, keys)
        raise _bad_credentials()
    for key in keys:
        stale = _failure_row(session, key)
        if stale is not None:
            session.delete(stale)
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    web = WebSession(
        tenant_id=matched.tenant_id,
        user_id=matched.id or 0,
        session_hash=_digest(session_id),
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + SESSION_IDLE,
        last_seen_at=now,
    )
    session.add(web)
    session.flush()
    return SignedIn(
        caller=access.caller_of(matched),
        session_id=SecretStr(session_id),
        csrf_token=web.csrf_token,
        expires_at=web.expires_at,
    )


def authenticate_session(*, session: Session, session_id: str) -> SessionCaller:
    """The caller behind a session cookie. Idle sessions expire after SESSION_IDLE, every
    session after SESSION_MAX."""
    row = session.exec(select(WebSession).where(WebSession.session_hash == _digest(session_id))).first()
    now = utcnow()
    if row is None or row.expires_at <= now or row.created_at + SESSION_MAX <= now:
        raise _bad_credentials()
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise _bad_credentials()
    if row.last_seen_at is None or now - row.last_seen_at > TOKEN_TOUCH:
        row.last_seen_at = now
        row.expires_at = min(now + SESSION_IDLE, row.created_at + SESSION_MAX)
        session.add(row)
    return SessionCaller(caller=access.caller_of(user), csrf_token=row.csrf_token)


def sign_out(*, session: Session, session_id: str) -> None:
    row = session.exec(select(WebSession).where(WebSession.session_hash == _digest(session_id))).first()
    if row is not None:
        session.delete(row)
        session.flush()
