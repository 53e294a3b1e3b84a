"""Every sync error has a stable code, plain fields, a family, and a sentence built from the
same template that renders it once stored on an account (`core.problems`)."""

from __future__ import annotations

import pytest
from pydantic_core import to_jsonable_python
from sqlalchemy import Engine

from core import problems
from core.errors import DomainError, ErrorKind
from sync import errors, oauth, oauth_tokens, smtp_check

CASES: list[tuple[errors.SyncError, str, ErrorKind]] = [
    (errors.AuthFailed("imap.x.test", "ann"), "auth_failed", ErrorKind.INVALID),
    (
        errors.CertificateUntrusted("imap.x.test", 993, "self-signed"),
        "certificate_untrusted",
        ErrorKind.INVALID,
    ),
    (errors.TlsFailed("imap.x.test", 143, "wrong version"), "tls_failed", ErrorKind.INVALID),
    (errors.HostNotFound("imap.x.test"), "host_not_found", ErrorKind.INVALID),
    (errors.BlockedHost("meta.test", "a link-local address"), "host_blocked", ErrorKind.INVALID),
    (errors.ConnectionRefused("imap.x.test", 993), "connection_refused", ErrorKind.UNAVAILABLE),
    (errors.ConnectionTimedOut("imap.x.test", 993, 2.5), "connection_timed_out", ErrorKind.UNAVAILABLE),
    (errors.ConnectionLost("imap.x.test", "EOF while reading"), "connection_lost", ErrorKind.UNAVAILABLE),
    (errors.InboxMissing(), "inbox_missing", ErrorKind.INVALID),
    (errors.SentFolderMissing(), "sent_folder_missing", ErrorKind.INVALID),
    (errors.UidValidityUnstable("INBOX"), "uidvalidity_unstable", ErrorKind.CONFLICT),
    (errors.CredentialsUnreadable(), "credentials_unreadable", ErrorKind.INTERNAL),
    (errors.StorageUnavailable("OperationalError"), "storage_unavailable", ErrorKind.UNAVAILABLE),
    (errors.LeaseLost(), "lease_lost", ErrorKind.CONFLICT),
    (errors.ProtocolError("listing folders"), "protocol_error", ErrorKind.UNAVAILABLE),
    (errors.MessageFetchFailed(7, "no data"), "message_fetch_failed", ErrorKind.UNAVAILABLE),
    (errors.UnexpectedError("KeyError"), "sync_unexpected", ErrorKind.INTERNAL),
    (smtp_check.SmtpStartTlsMissing("smtp.x.test", 587), "smtp_starttls_missing", ErrorKind.INVALID),
    (smtp_check.SmtpTlsFailed("smtp.x.test", 465, "wrong version"), "smtp_tls_failed", ErrorKind.INVALID),
    (smtp_check.SmtpAuthUnavailable("smtp.x.test", 25), "smtp_auth_unavailable", ErrorKind.INVALID),
    (smtp_check.SmtpRejected("smtp.x.test", 25, "greeting"), "smtp_rejected", ErrorKind.INVALID),
    (oauth.OAuthGrantInvalid("google", "invalid_grant"), "oauth_reconnect_needed", ErrorKind.INVALID),
    (
        oauth.OAuthProviderUnavailable("google", "HTTP 503"),
        "oauth_provider_unavailable",
        ErrorKind.UNAVAILABLE,
    ),
    (oauth.OAuthRefused("google", "invalid_client"), "oauth_refused", ErrorKind.INVALID),
    (oauth.DeviceFlowFailed("microsoft", "access_denied"), "oauth_device_failed", ErrorKind.INVALID),
    (oauth_tokens.NotOAuthAccount(7), "oauth_not_connected", ErrorKind.CONFLICT),
]


@pytest.mark.parametrize(("error", "code", "kind"), CASES, ids=[c[1] for c in CASES])
def test_code_kind_fields_and_stored_text_agree(error: errors.SyncError, code: str, kind: ErrorKind) -> None:
    assert isinstance(error, DomainError)
    assert (error.code, error.kind) == (code, kind)
    assert code in problems.TEMPLATES
    # What is stored (code + params) renders to exactly what was raised.
    stored = to_jsonable_python(error.params)
    assert problems.render(error.code, stored) == error.message == str(error)
    # The product's words, never a face's.
    assert "--" not in error.message and "crm-inbox account" not in error.message


def test_fields_are_the_facts() -> None:
    timed_out = errors.ConnectionTimedOut("imap.x.test", 993, 2.5)
    assert timed_out.fields == {"host": "imap.x.test", "port": 993, "seconds": 2.5}
    assert "did not answer within 2.5 s" in timed_out.message
    assert errors.AuthFailed("h", "ann").fields == {"host": "h", "username": "ann"}


def test_transient_is_kept() -> None:
    assert not errors.AuthFailed("h", "u").transient
    assert not errors.UidValidityUnstable("INBOX").transient
    assert errors.ConnectionRefused("h", 1).transient and errors.HostNotFound("h").transient


def test_auth_stopped_and_folder_problems_render() -> None:
    params = {"host": "h", "username": "ann", "failures": 3}
    text = problems.render("auth_stopped", params) or ""
    assert text.startswith(errors.AuthFailed("h", "ann").message)
    assert text.endswith("Stopped retrying after 3 refused logins.")
    several = {
        "problems": [
            {"folder": None, "code": "sent_folder_missing", "params": {}},
            {"folder": "INBOX", "code": "uidvalidity_unstable", "params": {"folder": "INBOX"}},
        ]
    }
    assert problems.render("folder_problems", several) == (
        f"{errors.SentFolderMissing().message} INBOX: {errors.UidValidityUnstable('INBOX').message}"
    )


def test_busy_database_is_a_transient_failure_of_the_pass(
    sqlite_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.11: another process holds SQLite's write lock (a long import): the pass of each
    account fails as "storage unavailable" after the busy timeout, never with a traceback."""
    import sqlite3
    import time

    from core.db import make_engine
    from core.settings import reset_settings
    from sync.account_pass import SyncEngine
    from tests.factories import make_offline_account, make_tenant

    tenant = make_tenant(sqlite_db)
    first = make_offline_account(sqlite_db, tenant, email="a@acme.test")
    second = make_offline_account(sqlite_db, tenant, email="b@acme.test")
    monkeypatch.setenv("CRM_INBOX_DATABASE_BUSY_TIMEOUT_SECONDS", "0.5")
    reset_settings()
    url = sqlite_db.url.render_as_string(hide_password=False)
    engine = make_engine(url)
    holder = sqlite3.connect(sqlite_db.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with SyncEngine(db=engine) as sync:
            summaries = [sync.sync_account(first), sync.sync_account(second)]
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    for summary in summaries:
        assert summary.status == "failed"
        assert summary.failure is not None and summary.failure.code == "storage_unavailable"
