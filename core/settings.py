"""All runtime settings in one validated object.

Read from the environment (prefix ``CRM_INBOX_``) when `get_settings()` is first called, never at
import time, so tests and the CLI can set the environment first.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "crm-inbox"


class OAuthProviderConfig(BaseModel):
    """A generic OAuth2 provider (a self-hosted Keycloak in front of Dovecot, or the tests' own
    authorization server), given as JSON in ``CRM_INBOX_OAUTH_PROVIDERS``: {"name": {...}}."""

    label: str = ""
    authorization_url: str
    token_url: str
    revocation_url: str | None = None
    userinfo_url: str | None = None
    # RFC 8628 device authorization endpoint (sign in on another device; CLI `--device`).
    device_authorization_url: str | None = None
    scopes: list[str] = Field(default_factory=list)
    client_id: str
    client_secret: SecretStr = SecretStr("")
    imap_host: str
    imap_port: int = 993
    imap_security: str = "tls"
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: str | None = None
    ca_file: str | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CRM_INBOX_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Empty means "embedded SQLite file in data_dir".
    database_url: str = ""
    # How long a SQLite writer waits for the write lock before the database counts as busy.
    database_busy_timeout_seconds: float = Field(default=30.0, gt=0)
    # Fernet key (urlsafe base64, 32 bytes). Empty: read or create `secret_key_file`.
    secret_key: str = Field(default="", repr=False)
    secret_key_file: Path | None = None

    sync_batch_size: int = Field(default=200, ge=1, le=5000)
    # ...and at most this many bytes of message (RFC822.SIZE) per batch: peak memory follows it.
    sync_batch_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    max_recipients: int = Field(default=100, ge=1)
    default_sync_interval_seconds: int = Field(default=300, ge=10)
    connect_timeout_seconds: float = Field(default=15.0, gt=0)
    read_timeout_seconds: float = Field(default=120.0, gt=0)
    # Deadlines, so a server that trickles (each read within the socket timeout) cannot hold a
    # pass forever: one IMAP command may take this floor plus its expected bytes at the minimum
    # rate; one account's pass at most `pass_deadline_seconds` (it resumes from its last batch).
    command_deadline_seconds: float = Field(default=120.0, gt=0)
    min_bytes_per_second: int = Field(default=20_000, ge=1)
    pass_deadline_seconds: float = Field(default=3600.0, gt=0)
    # A message whose fetch or store fails this many times is quarantined and skipped.
    max_message_attempts: int = Field(default=3, ge=1)
    # A folder whose UIDVALIDITY changed this many times is flagged instead of resynced again.
    max_uidvalidity_resyncs: int = Field(default=5, ge=1)
    # Authentication failures in a row before an account waits for new credentials.
    max_auth_failures: int = Field(default=3, ge=1)
    # Allow IMAP/SMTP hosts on private and loopback ranges (demo and tests need it).
    allow_private_hosts: bool = False
    # Let the image proxy fetch from private and loopback addresses. Never in production (an image
    # address comes from any sender, unlike a mail server's); only for tests with a local server.
    image_proxy_allow_private: bool = False
    # Processes parsing MIME beside the fetch/store loop (0: parse in the syncing process).
    # Default: two on a multi-core machine (measured on 2 cores: 2 > 1 > 0, bench/RESULTS.md).
    # One core is left to the syncing process (IMAP and the store): on two cores one worker
    # synced as fast as two and used about 30 MiB less (bench/RESULTS.md, issue 14).
    parse_workers: int = Field(default_factory=lambda: min(max((os.cpu_count() or 1) - 1, 0), 4), ge=0, le=16)
    # Let the optional `fast-mail-parser` split MIME structure where it is proven to read mail as
    # the stdlib does (`sync.parse.fast`); the stored result is the same. No effect when it is
    # not installed (the `fast` extra).
    fast_parser: bool = True
    # How long one worker's claim on an account lasts without renewal.
    lease_seconds: int = Field(default=600, ge=30)
    # The deployment's own SMTP for system mail (notifications, verification links) of tenants
    # in the default or branded sending mode (issue 10, item 5). Empty host: none configured.
    system_smtp_host: str = ""
    system_smtp_port: int = Field(default=587, ge=1, le=65535)
    system_smtp_security: str = Field(default="starttls", pattern="^(tls|starttls|plain)$")
    system_smtp_username: str = ""
    system_smtp_password: SecretStr | None = Field(default=None, repr=False)
    system_smtp_ca_file: str | None = None
    # From of the default sender ("Acme via crm-inbox <notifications@...>").
    system_from_address: str = "notifications@crm-inbox.invalid"
    # The DNS server for sending-domain advice ("host" or "host:port"); empty: the system's.
    dns_server: str = ""
    # Where links in mail point (sender verification, password reset), without a trailing slash.
    public_url: str = "http://localhost:8000"

    # OAuth2 clients registered with the providers (README, "Connecting Google and Microsoft 365
    # mailboxes"). A provider without a client id is not offered. Secrets are SecretStr: never
    # in reprs, logs or responses.
    oauth_google_client_id: str = ""
    oauth_google_client_secret: SecretStr = SecretStr("")
    oauth_microsoft_client_id: str = ""
    oauth_microsoft_client_secret: SecretStr = SecretStr("")
    # "common" (any work or personal account), "organizations", or one directory's id.
    oauth_microsoft_tenant: str = "common"
    oauth_providers: dict[str, OAuthProviderConfig] = Field(default_factory=dict)
    # The callback the browser returns to, exactly as registered with the providers, e.g.
    # https://crm.example.com/api/oauth/callback. Empty: derived from the request's address.
    oauth_redirect_url: str = ""
    # A consent not completed within this many seconds is refused (its state expires).
    oauth_state_seconds: int = Field(default=600, ge=30, le=3600)
    # An access token is refreshed when it has less than this left.
    oauth_refresh_margin_seconds: int = Field(default=120, ge=0)
    # Timeout of one request to a provider's token, revocation or userinfo endpoint.
    oauth_http_timeout_seconds: float = Field(default=15.0, gt=0)
    # The hosted forwarding addresses (sync/inbound.py): <local>-<suffix>@<inbound_domain>.
    # `crm-inbox run` starts the listener when `inbound_enabled`; `crm-inbox inbound` always.
    inbound_enabled: bool = False
    inbound_domain: str = "in.localhost"
    inbound_host: str = "127.0.0.1"
    inbound_port: int = Field(default=2525, ge=0, le=65535)
    # An LMTP listener beside the SMTP one (for a local MTA in front); 0: none.
    inbound_lmtp_port: int = Field(default=0, ge=0, le=65535)
    # PEM files offering STARTTLS; empty: no STARTTLS.
    inbound_tls_cert: Path | None = None
    inbound_tls_key: Path | None = None
    inbound_max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    inbound_max_connections_per_peer: int = Field(default=10, ge=1)
    # The same Message-ID arriving this many times at one address is a forwarding loop.
    inbound_loop_threshold: int = Field(default=5, ge=2)

    @field_validator("inbound_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return value.strip().strip(".").lower()

    @field_validator("database_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'crm-inbox.db'}"

    @property
    def resolved_key_file(self) -> Path:
        return self.secret_key_file or (self.data_dir / "secret.key")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between cases)."""
    get_settings.cache_clear()
