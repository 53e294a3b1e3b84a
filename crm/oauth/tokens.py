"""The tokens of an OAuth account at rest: read, claim a refresh, store what the provider gave.

No network here (`crm` does not import `sync`): `sync.oauth_tokens.TokenSource` calls the
provider between these short transactions. The protocol, safe across threads and processes
sharing one database:

1. `grant_of` reads the tokens and their `version`;
2. `claim_refresh` is a compare-and-set: it succeeds for one worker only (same `version`, no
   live claim); the others wait for the version to move and use the new access token;
3. the winner calls the provider with no transaction open, then `store_tokens` writes the new
   access token AND the rotated refresh token in one UPDATE guarded by the version, so a crash
   can lose at most the answer in flight, never a token already stored, and no worker can
   overwrite a newer refresh token with an older one;
4. `refresh_failed` ends the claim: the provider down -> backoff; `invalid_grant` -> the grant
   is unusable and the account "needs to be reconnected" (no attempt until then).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from core.types import AccountStatus, utcnow
from crm.models import MailAccount, OAuthGrant
from crm.outbound import notifications
from crm.sync_state import backoff_delay


@dataclass(frozen=True, slots=True)
class GrantState:
    """A grant's row as plain values (tokens still encrypted)."""

    account_id: int
    provider: str
    scopes: tuple[str, ...]
    version: int
    access_encrypted: str | None
    access_expires_at: datetime | None
    refresh_encrypted: str | None
    refreshing_until: datetime | None
    next_refresh_at: datetime | None
    usable: bool


def _state(row: OAuthGrant) -> GrantState:
    return GrantState(
        account_id=row.account_id,
        provider=row.provider,
        scopes=tuple(row.scopes),
        version=row.version,
        access_encrypted=row.access_token_encrypted,
        access_expires_at=row.access_expires_at,
        refresh_encrypted=row.refresh_token_encrypted,
        refreshing_until=row.refreshing_until,
        next_refresh_at=row.next_refresh_at,
        usable=row.usable,
    )


def grant_of(*, session: Session, account_id: int) -> GrantState | None:
    """The account's grant, or None for a password account. Read fresh from the database (not
    the session's identity map), since other workers change it."""
    row = session.exec(
        select(OAuthGrant)
        .where(OAuthGrant.account_id == account_id)
        .execution_options(populate_existing=True)
    ).first()
    return _state(row) if row is not None else None


def claim_refresh(*, session: Session, account_id: int, version: int, owner: str, seconds: float) -> bool:
    """Compare-and-set: True when this worker is now the one refreshing this account."""
    now = utcnow()
    result = session.execute(
        update(OAuthGrant)
        .where(col(OAuthGrant.account_id) == account_id, col(OAuthGrant.version) == version)
        .where(col(OAuthGrant.usable).is_(True))
        .where(or_(col(OAuthGrant.refreshing_until).is_(None), col(OAuthGrant.refreshing_until) < now))
        .values(refreshing_owner=owner, refreshing_until=now + timedelta(seconds=seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def store_tokens(
    *,
    session: Session,
    account_id: int,
    version: int,
    access_encrypted: str,
    refresh_encrypted: str | None,
    expires_at: datetime | None,
    scopes: tuple[str, ...],
) -> bool:
    """The refreshed tokens, in one UPDATE guarded by the version read before the refresh.
    `refresh_encrypted` None keeps the stored refresh token (the provider did not rotate it)."""
    values: dict[str, Any] = {
        "access_token_encrypted": access_encrypted,
        "access_expires_at": expires_at,
        "scopes": list(scopes),
        "version": version + 1,
        "refreshing_owner": None,
        "refreshing_until": None,
        "refreshed_at": utcnow(),
        "refresh_failures": 0,
        "next_refresh_at": None,
    }
    if refresh_encrypted is not None:
        values["refresh_token_encrypted"] = refresh_encrypted
    result = session.execute(
        update(OAuthGrant)
        .where(col(OAuthGrant.account_id) == account_id, col(OAuthGrant.version) == version)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def refresh_failed(
    *,
    session: Session,
    account_id: int,
    owner: str,
    code: str,
    params: Mapping[str, Any],
    reconnect: bool,
) -> None:
    """End our claim after a failed refresh. `reconnect`: the provider refused the refresh
    token, so the grant is dead and the account waits for a person (status needs_reconnect,
    the reason as code + params); otherwise the provider was unreachable: back off."""
    row = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).first()
    if row is None:
        return
    if row.refreshing_owner == owner:
        row.refreshing_owner, row.refreshing_until = None, None
    if reconnect:
        row.usable = False
        mark_needs_reconnect(session=session, account_id=account_id, code=code, params=params)
    else:
        row.refresh_failures += 1
        row.next_refresh_at = utcnow() + backoff_delay(row.refresh_failures)
    session.add(row)


def mark_needs_reconnect(*, session: Session, account_id: int, code: str, params: Mapping[str, Any]) -> None:
    account = session.get_one(MailAccount, account_id)
    if account.status is not AccountStatus.NEEDS_RECONNECT:
        # Once, when it stops: the admins are told by mail (issue 10, item 8), in the same
        # transaction as the status, so a crash can neither lose nor repeat the notice.
        notifications.on_needs_credentials(
            session=session, tenant_id=account.tenant_id, account_id=account_id, account_email=account.email
        )
    account.status = AccountStatus.NEEDS_RECONNECT
    account.last_error_code, account.last_error_params = code, dict(params)
    account.last_error_at = utcnow()
    account.next_attempt_at = None
    session.add(account)
