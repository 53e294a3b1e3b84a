"""Step 1 of adding or editing an account: the rules that need no database and no network
(addresses with email-validator, ports, SMTP defaults), and the new values of an edit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import SecretStr

from core.connection import ConnectionSettings
from core.errors import InvalidInput
from core.secrets import SecretBox
from core.types import Security
from crm import tenants
from crm.models import MailAccount

DEFAULT_SMTP_PORTS = {Security.TLS: 465, Security.STARTTLS: 587, Security.PLAIN: 25}
MIN_SYNC_INTERVAL_SECONDS = 10


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class AccountInput:
    email: str
    imap_host: str
    imap_port: int
    imap_security: Security
    username: str
    display_name: str = ""
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    ca_file: str | None = None
    sync_interval_seconds: int = 300
    sync_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class SmtpInput:
    """Outgoing-mail settings given when an account is connected (all optional). Saved only
    once a test mail to `test_to` was accepted (`crm.mailboxes.connect_account`)."""

    host: str | None = None
    port: int | None = None
    security: Security | None = None
    username: str | None = None  # None: the IMAP username
    password: SecretStr | None = None  # None: the IMAP password
    test_to: str | None = None  # where the test mail goes: required with a host (SMTP set-up rule)


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """An edit: None leaves a field as it is. An empty string clears `ca_file` and `smtp_host`
    (removes SMTP altogether). Any other SMTP field is refused (`smtp_setup_required`): SMTP
    settings are saved by `crm.outbound.smtp_setup` after a test mail; the fields stay here so
    a face can pass what it was given and get that refusal, in its own words."""

    display_name: str | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: Security | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    clear_smtp_password: bool = False
    sync_interval_seconds: int | None = None


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not 0 < port < 65536:
        raise InvalidInput(
            "invalid_port",
            f"{what} port {port} is not a valid port number (1-65535).",
            field=f"{what.lower()}_port",
            port=port,
        )


def _smtp_defaults(
    host: str | None, port: int | None, security: Security | None
) -> tuple[str | None, int | None, Security | None]:
    """No SMTP host: no SMTP at all. Otherwise STARTTLS by default (never plaintext unless asked),
    and the usual port of the chosen security."""
    host = (host or "").strip() or None
    if host is None:
        return None, None, None
    security = security or Security.STARTTLS
    port = port or DEFAULT_SMTP_PORTS[security]
    _check_port(port, "SMTP")
    return host, port, security


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account to add, validated and normalized; nothing was read from the database."""

    data: AccountInput
    password: SecretStr
    smtp_username: str | None
    smtp_password: SecretStr | None

    @property
    def settings(self) -> ConnectionSettings:
        d = self.data
        return ConnectionSettings(
            imap_host=d.imap_host,
            imap_port=d.imap_port,
            imap_security=d.imap_security,
            username=d.username,
            password=self.password,
            ca_file=d.ca_file,
            smtp_host=d.smtp_host,
            smtp_port=d.smtp_port,
            smtp_security=d.smtp_security,
            smtp_username=self.smtp_username,
            smtp_password=self.smtp_password,
        )


def validate_new_account(
    data: AccountInput, password: SecretStr, smtp: SmtpInput | None = None
) -> NewAccount:
    """Step 1 of an add: the rules that need no database (address, ports, SMTP defaults)."""
    email = tenants.normalize_email(data.email)
    imap_host = data.imap_host.strip()
    if not imap_host:
        raise InvalidInput("imap_host_required", "The IMAP host cannot be empty.", field="imap_host")
    _check_port(data.imap_port, "IMAP")
    smtp = smtp or SmtpInput(data.smtp_host, data.smtp_port, data.smtp_security)
    smtp_host, smtp_port, smtp_security = _smtp_defaults(smtp.host, smtp.port, smtp.security)
    return NewAccount(
        data=replace(
            data,
            email=email,
            imap_host=imap_host,
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_security=smtp_security,
        ),
        password=password,
        smtp_username=(smtp.username or None) if smtp_host else None,
        smtp_password=smtp.password if smtp_host else None,
    )


@dataclass(frozen=True, slots=True)
class EditPlan:
    values: dict[str, Any]  # column -> new value (secrets already encrypted)
    connection_changed: bool
    settings: ConnectionSettings  # what to check: the settings after the edit


def _refuse_smtp_changes(account: MailAccount, c: AccountChanges) -> None:
    """SMTP settings are saved only after a test mail was accepted (`crm.outbound.smtp_setup`):
    an account edit only logs in (and may be forced or unchecked), which proves nothing about
    sending, and it has no test address. So new SMTP settings are refused here and the faces
    point at the SMTP setup, the one way in; removing SMTP (`smtp_host` "") stays allowed since
    nothing is sent with settings that are gone."""
    given = [
        name
        for name, present in (
            ("smtp_host", bool(c.smtp_host)),
            ("smtp_port", c.smtp_port is not None),
            ("smtp_security", c.smtp_security is not None),
            ("smtp_username", c.smtp_username is not None),
            ("smtp_password", c.smtp_password is not None),
            ("clear_smtp_password", c.clear_smtp_password),
        )
        if present
    ]
    if given:
        raise InvalidInput(
            "smtp_setup_required",
            "SMTP settings are saved only after a test mail was accepted: change them with the "
            "SMTP setup, which sends one. Nothing was saved.",
            field=given[0],
            smtp_fields=given,
            account_id=account.id,
        )


def plan_edit(account: MailAccount, c: AccountChanges, box: SecretBox) -> EditPlan:
    """Step 1 of an edit: the new values and whether they change how we connect."""
    _refuse_smtp_changes(account, c)
    imap_host = c.imap_host.strip() if c.imap_host is not None else account.imap_host
    if not imap_host:
        raise InvalidInput("imap_host_required", "The IMAP host cannot be empty.", field="imap_host")
    imap_port = c.imap_port if c.imap_port is not None else account.imap_port
    _check_port(imap_port, "IMAP")
    imap_security = c.imap_security or account.imap_security
    username = c.username if c.username is not None else account.username
    if not username.strip():
        raise InvalidInput("username_required", "The username cannot be empty.", field="username")
    ca_file = account.ca_file if c.ca_file is None else (c.ca_file or None)
    # Only a removal of SMTP gets this far (`_refuse_smtp_changes`): it stays as it is or goes.
    removed = c.smtp_host == ""
    smtp_host = None if removed else account.smtp_host
    smtp_port = None if removed else account.smtp_port
    smtp_security = None if removed else account.smtp_security
    smtp_username = None if removed else account.smtp_username
    if c.sync_interval_seconds is not None and c.sync_interval_seconds < MIN_SYNC_INTERVAL_SECONDS:
        raise InvalidInput(
            "invalid_sync_interval",
            f"The sync interval must be at least {MIN_SYNC_INTERVAL_SECONDS} seconds.",
            field="sync_interval_seconds",
            minimum=MIN_SYNC_INTERVAL_SECONDS,
        )
    connection_changed = (
        (imap_host, imap_port, imap_security, username, ca_file)
        != (account.imap_host, account.imap_port, account.imap_security, account.username, account.ca_file)
        or (smtp_host, smtp_port, smtp_security, smtp_username)
        != (account.smtp_host, account.smtp_port, account.smtp_security, account.smtp_username)
        or c.password is not None
    )
    smtp_secret = None if smtp_host is None else account.smtp_secret_encrypted
    values: dict[str, Any] = {
        "imap_host": imap_host,
        "imap_port": imap_port,
        "imap_security": imap_security,
        "username": username,
        "ca_file": ca_file,
        "smtp_host": smtp_host,
        "smtp_port": smtp_port,
        "smtp_security": smtp_security,
        "smtp_username": smtp_username if smtp_host else None,
        "smtp_secret_encrypted": smtp_secret,
    }
    if c.display_name is not None:
        values["display_name"] = c.display_name
    if c.sync_interval_seconds is not None:
        values["sync_interval_seconds"] = c.sync_interval_seconds
    if c.password is not None:
        values["secret_encrypted"] = box.encrypt(c.password)
    settings = ConnectionSettings(
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        username=username,
        password=c.password or box.decrypt(account.secret_encrypted),
        ca_file=ca_file,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
        smtp_username=smtp_username if smtp_host else None,
        smtp_password=box.decrypt(smtp_secret) if smtp_secret else None,
    )
    return EditPlan(values=values, connection_changed=connection_changed, settings=settings)
