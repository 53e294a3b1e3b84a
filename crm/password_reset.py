"""Forgotten passwords: a reset link mailed to the user, used once, within an hour.

* Asking (`request_reset`) answers the same whether the address belongs to a user or not, so the
  form cannot be used to find out who has an account. It is rate-limited per address and per
  client address (the same counters for known and unknown addresses, so a refusal tells nothing
  either); over the limit the caller is told to wait, for any address.
* The link carries 256 random bits; only their SHA-256 is stored (`PasswordReset`), like API
  tokens and sessions: a copy of the database holds no usable link. It expires after an hour
  and is single-use (a compare-and-set on `used_at`, so two clicks racing set one password).
* The mail is the "password reset" notification (`crm.outbound.notifications`, always sent: it
  was asked for), on the send queue, from the tenant's sender (`crm.outbound.system_mail`). An
  address used by users of several tenants gets one link per user, each from its tenant.
* Setting the new password (`reset_password`) applies the one strength rule
  (`crm.auth.check_password_rule`), ends every browser session of the user (whoever had the old
  password is signed out) and voids the user's other outstanding links. A deactivated user gets
  no link and cannot use one asked for before.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from core.errors import InvalidInput, Unauthenticated
from core.settings import get_settings
from core.types import utcnow
from crm import auth
from crm.models import LoginFailure, PasswordReset, User, WebSession
from crm.outbound import notifications

RESET_VALID = timedelta(hours=1)
# Asking for links: per address and per client address, in a sliding-free fixed window.
MAX_PER_ADDRESS = 3
MAX_PER_CLIENT = 10
RATE_WINDOW = timedelta(hours=1)
ANSWER = "If an account uses this address, a link to choose a new password was mailed to it."


@dataclass(frozen=True, slots=True)
class ResetRequested:
    message: str  # the same words whatever the address


@dataclass(frozen=True, slots=True)
class ResetDone:
    email: str
    sessions_ended: int


def _throttle(session: Session, key: str, limit: int, now: datetime) -> None:
    """Count one request against `key`; refuse once `limit` were made in the window. Stored in
    the sign-in failure table (a counter per key) so it holds across worker processes."""
    row = session.exec(select(LoginFailure).where(LoginFailure.key == key)).first()
    if row is None:
        row = LoginFailure(key=key, failures=0, window_started_at=now)
    if now - row.window_started_at > RATE_WINDOW:
        row.failures, row.window_started_at = 0, now
    if row.failures >= limit:
        seconds = int((row.window_started_at + RATE_WINDOW - now).total_seconds()) + 1
        raise Unauthenticated(
            "reset_throttled",
            f"Too many reset requests: try again in {(seconds + 59) // 60} minutes.",
            retry_after=seconds,
        )
    row.failures += 1
    session.add(row)
    session.flush()


def reset_url(token: str) -> str:
    return f"{get_settings().public_url.rstrip('/')}/reset-password?token={token}"


def request_reset(
    *, session: Session, email: str, client_address: str = "", now: datetime | None = None
) -> ResetRequested:
    """Mail a reset link to every active user with this address; the same answer for any
    address. `reset_throttled` past the limits (the caller rolls back: a refusal counts nothing)."""
    now = now or utcnow()
    address = email.strip().lower()[:320]
    if "@" not in address:
        raise InvalidInput("email_invalid", "Give the e-mail address you sign in with.", field="email")
    if client_address:
        _throttle(session, f"reset-ip:{client_address}", MAX_PER_CLIENT, now)
    _throttle(session, f"reset-email:{address}", MAX_PER_ADDRESS, now)
    users = session.exec(
        select(User).where(User.email == address, col(User.active).is_(True)).order_by(col(User.id))
    ).all()
    for user in users:
        token = secrets.token_urlsafe(32)
        session.add(
            PasswordReset(
                tenant_id=user.tenant_id,
                user_id=user.id or 0,
                token_hash=auth.digest(token),
                created_at=now,
                expires_at=now + RESET_VALID,
            )
        )
        session.flush()
        notifications.notify(
            session=session,
            tenant_id=user.tenant_id,
            user_id=user.id or 0,
            event=notifications.Event.PASSWORD_RESET,
            values={"reset_url": reset_url(token)},
        )
    return ResetRequested(ANSWER)


def _invalid() -> InvalidInput:
    return InvalidInput(
        "reset_link_invalid",
        "This reset link is not valid: it expired (links last an hour), was used already, or was "
        "replaced. Ask for a new one.",
        field="token",
    )


def check_link(*, session: Session, token: str, now: datetime | None = None) -> str:
    """The address a still-usable link is for (shown on the page); refused like any bad link."""
    row = session.exec(
        select(PasswordReset).where(PasswordReset.token_hash == auth.digest(token[:200]))
    ).first()
    now = now or utcnow()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise _invalid()
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise _invalid()
    return user.email


def reset_password(
    *, session: Session, token: str, password: SecretStr, now: datetime | None = None
) -> ResetDone:
    """Set a new password with a reset link: once, before it expires, for an active user."""
    now = now or utcnow()
    email = check_link(session=session, token=token, now=now)
    auth.check_password_rule(password)  # before the link is spent: a short password can retry
    token_hash = auth.digest(token[:200])
    spent = session.execute(
        update(PasswordReset)
        .where(
            col(PasswordReset.token_hash) == token_hash,
            col(PasswordReset.used_at).is_(None),
            col(PasswordReset.expires_at) > now,
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(spent, "rowcount", 0) != 1:
        raise _invalid()  # another request used it first
    row = session.exec(select(PasswordReset).where(PasswordReset.token_hash == token_hash)).one()
    auth.store_password(session, row.user_id, password)
    # The user's other links die with this one; every browser session ends (the new password is
    # the only way back in).
    session.execute(
        update(PasswordReset)
        .where(col(PasswordReset.user_id) == row.user_id, col(PasswordReset.used_at).is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    ended = session.execute(
        delete(WebSession)
        .where(col(WebSession.user_id) == row.user_id)
        .execution_options(synchronize_session=False)
    )
    session.flush()
    return ResetDone(email=email, sessions_ended=int(getattr(ended, "rowcount", 0) or 0))
