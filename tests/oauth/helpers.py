"""Builders for the OAuth tests: an account connected with tokens from the test server, the
stored grant read back, and a dump of every table to look for tokens in clear."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import Engine, text
from sqlmodel import SQLModel, select as sm_select

from core.caller import Caller
from core.db import session_scope
from core.oauth import get_provider
from core.secrets import SecretBox
from core.settings import Settings
from core.types import Security, utcnow
from crm.models import MailAccount, OAuthGrant
from crm.oauth import accounts
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import PROVIDER, OAuthUser


def connect_with_tokens(
    db: Engine,
    tenant_id: int,
    user: OAuthUser,
    auth: AuthServer,
    settings: Settings,
    *,
    expires_at: datetime | None = None,
    smtp_port: int | None = None,
) -> tuple[int, str, str]:
    """An account of `user` holding a fresh pair of tokens: (account id, access, refresh)."""
    access, refresh = auth.issue(user.email)
    with session_scope(db) as session:
        saved = accounts.save_oauth_account(
            session=session,
            caller=Caller.operator(tenant_id),
            provider=get_provider(PROVIDER, settings),
            email=user.email,
            tokens=accounts.OAuthTokens(
                access_token=SecretStr(access),
                refresh_token=SecretStr(refresh),
                expires_at=expires_at or utcnow() + timedelta(hours=1),
                scopes=("mail",),
            ),
            box=SecretBox.from_settings(settings),
        )
        if smtp_port is not None:
            row = session.get_one(MailAccount, saved.account.id)
            row.smtp_host, row.smtp_port, row.smtp_security = "127.0.0.1", smtp_port, Security.PLAIN
            session.add(row)
    return saved.account.id, access, refresh


def stored_grant(db: Engine, account_id: int) -> OAuthGrant:
    with session_scope(db) as session:
        row = session.exec(sm_select(OAuthGrant).where(OAuthGrant.account_id == account_id)).one()
        session.expunge(row)
        return row


def stored_refresh_token(db: Engine, account_id: int, settings: Settings) -> str:
    grant = stored_grant(db, account_id)
    assert grant.refresh_token_encrypted is not None
    return SecretBox.from_settings(settings).decrypt(grant.refresh_token_encrypted).get_secret_value()


def expire_stored_access_token(db: Engine, account_id: int) -> None:
    with session_scope(db) as session:
        session.execute(
            text("UPDATE oauth_grant SET access_expires_at = :past WHERE account_id = :id"),
            {"past": (utcnow() - timedelta(minutes=1)).replace(tzinfo=None), "id": account_id},
        )


def dump(db: Engine) -> str:
    """Every row of every table as text: what a database dump would show."""
    lines = []
    with db.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                lines.append(repr(tuple(row)))
    return "\n".join(lines)
