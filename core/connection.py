"""What a mail-server connection check needs and returns, in plain values shared by `crm` (which
saves settings only after a check) and `sync` (which performs it): neither imports the other."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import SecretStr

from core.types import Security


@dataclass(frozen=True, slots=True)
class BearerToken:
    """An OAuth2 access token that logs in instead of a password (SASL XOAUTH2 or OAUTHBEARER,
    RFC 7628). Never shown: its repr hides the token like SecretStr does."""

    token: SecretStr


# What logs a mailbox in: its password, or an OAuth2 access token.
Credential = SecretStr | BearerToken


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything a connection check needs, in plain values (no sync types cross into crm).

    `smtp_username`/`smtp_password` None mean "same as IMAP", as on `MailAccount`."""

    imap_host: str
    imap_port: int
    imap_security: Security
    username: str
    password: Credential
    ca_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    smtp_username: str | None = None
    smtp_password: Credential | None = None


class CheckOutcome(Protocol):
    """What a verifier returns: `sync.check.CheckResult` satisfies it."""

    @property
    def ok(self) -> bool: ...

    @property
    def message(self) -> str: ...

    @property
    def code(self) -> str | None:
        """The failed check's error code (`core.problems.TEMPLATES`); None when it passed."""
        ...

    @property
    def params(self) -> Mapping[str, Any]:
        """That error's parameters: stored with the code when a failed check is saved anyway."""
        ...
