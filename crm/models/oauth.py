"""OAuth2 authorizations of mail accounts, and the consents in flight (0019)."""

from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from crm.models._columns import created, json_column, timestamp


class OAuthGrant(SQLModel, table=True):
    """The tokens an account logs in with instead of a password (one per account).

    Both tokens are Fernet-encrypted like passwords (`core.secrets`). `version` is bumped by
    every write of the tokens: a refresh is claimed and stored with a compare-and-set on it, so
    of several workers (threads or processes) refreshing one account at once only one calls the
    provider, and a rotated refresh token is stored in the same UPDATE as the access token."""

    __tablename__ = "oauth_grant"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    account_id: int = Field(foreign_key="mail_account.id", unique=True)
    provider: str = Field(max_length=32)
    scopes: list[str] = json_column(list)
    refresh_token_encrypted: str | None = Field(default=None, sa_type=Text)
    access_token_encrypted: str | None = Field(default=None, sa_type=Text)
    access_expires_at: datetime | None = timestamp()
    version: int = Field(default=0)
    # Who is refreshing now, until when (a claim that outlives a dead worker expires).
    refreshing_owner: str | None = Field(default=None, max_length=200)
    refreshing_until: datetime | None = timestamp()
    refreshed_at: datetime | None = timestamp()
    # The provider was down: no refresh before this (backoff), counted in a row.
    refresh_failures: int = Field(default=0)
    next_refresh_at: datetime | None = timestamp()
    # False once the provider refused the refresh token (invalid_grant): reconnect needed.
    usable: bool = Field(default=True)
    connected_by_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    connected_at: datetime = created()


class OAuthConsent(SQLModel, table=True):
    """One authorization request in flight: its `state` (stored hashed), the PKCE verifier
    (encrypted), who started it and from which session. Used once, expires after minutes."""

    __tablename__ = "oauth_consent"

    id: int | None = Field(default=None, primary_key=True)
    state_hash: str = Field(max_length=64, unique=True)
    binding_hash: str = Field(max_length=64)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="app_user.id")
    provider: str = Field(max_length=32)
    verifier_encrypted: str = Field(sa_type=Text)
    redirect_uri: str = Field(max_length=1000)
    # Reconnecting this account (None: connect a new one).
    account_id: int | None = Field(default=None, foreign_key="mail_account.id")
    created_at: datetime = created()
    expires_at: datetime = timestamp(nullable=False)
    used_at: datetime | None = timestamp()
