"""Sign-in material: password hashes, API tokens and browser sessions (0007).

Only hashes are stored: a password as argon2 (pwdlib), a token or session id as SHA-256 of a
random 256-bit value (a fast hash is right for random secrets: nothing to brute-force).
"""

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from crm.models._columns import created, timestamp


class UserPassword(SQLModel, table=True):
    __tablename__ = "user_password"

    user_id: int = Field(foreign_key="app_user.id", primary_key=True)
    password_hash: str = Field(max_length=500)
    updated_at: datetime = created()


class ApiToken(SQLModel, table=True):
    """A personal API token: shown once when created, stored hashed, revocable."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    name: str = Field(default="", max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)  # shown in lists so a user can tell tokens apart
    created_at: datetime = created()
    last_used_at: datetime | None = timestamp()
    revoked_at: datetime | None = timestamp()


class WebSession(SQLModel, table=True):
    """A browser sign-in: the cookie holds the random id, the row its hash and CSRF token."""

    __tablename__ = "web_session"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    session_hash: str = Field(max_length=64, unique=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = created()
    expires_at: datetime = timestamp(nullable=False)
    last_seen_at: datetime | None = timestamp()


class LoginFailure(SQLModel, table=True):
    """Failed sign-ins counted per key ("email:<address>" or "ip:<address>") in a window, so
    throttling holds across worker processes."""

    __tablename__ = "login_failure"
    __table_args__ = (Index("ix_login_failure_key", "key", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=400)
    failures: int = Field(default=0)
    window_started_at: datetime = created()
    locked_until: datetime | None = timestamp()


class PasswordReset(SQLModel, table=True):
    """A password-reset link (0024): the token's SHA-256 only, single-use (`used_at`), expiring."""

    __tablename__ = "password_reset"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = created()
    expires_at: datetime = timestamp(nullable=False)
    used_at: datetime | None = timestamp()
