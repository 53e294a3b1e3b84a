"""Sync over XOAUTH2 against the OAuth Dovecot, and the token lifecycle: refresh before expiry and
once more when refused, rotation kept, one refresh for concurrent workers, invalid_grant ->
needs reconnect without hammering, provider down -> transient. Tokens never in clear in the
database or the logs."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from core.db import session_scope
from core.secrets import SecretBox, new_key
from core.settings import Settings
from core.types import AccountStatus, utcnow
from crm import sync_state
from crm.models import MailAccount, MailKind, OAuthGrant, OutboundMail
from sync.account_pass import SyncEngine
from sync.oauth_tokens import TokenSource
from tests.factories import make_tenant, make_user
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import OAuthUser
from tests.oauth.helpers import (
    connect_with_tokens,
    dump,
    expire_stored_access_token,
    stored_grant,
    stored_refresh_token,
)

MAIL = (
    b"From: Ann <ann@customer.test>\r\nTo: x@example.test\r\nSubject: Quote\r\n"
    b"Message-ID: <q1@customer.test>\r\n\r\nHello\r\n"
)


def account_email(db: Engine, account_id: int) -> str:
    return _account(db, account_id).email


def _account(db: Engine, account_id: int) -> MailAccount:
    with session_scope(db) as session:
        row = session.get_one(MailAccount, account_id)
        session.expunge(row)
        return row


def test_sync_logs_in_with_xoauth2_and_keeps_tokens_secret(
    db: Engine,
    testidp: Settings,
    auth_server: AuthServer,
    oauth_user: OAuthUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = make_tenant(db)
    oauth_user.dovecot.append(oauth_user.email, "INBOX", MAIL)
    account_id, access, refresh = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.new_messages == 1
    assert _account(db, account_id).status is AccountStatus.OK
    # The token expired mid-life at the provider (our clock still thinks it is good): the
    # next pass's login is refused, the token refreshed once, and the pass goes on.
    before = auth_server.refresh_requests
    auth_server.expire_access_tokens()
    oauth_user.dovecot.append(oauth_user.email, "INBOX", MAIL.replace(b"q1@", b"q2@"))
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id, ignore_backoff=True)
    assert summary.status == "ok", summary.errors
    assert summary.new_messages == 1
    assert auth_server.refresh_requests == before + 1
    new_refresh = stored_refresh_token(db, account_id, testidp)
    assert new_refresh != refresh and auth_server.current_refresh_tokens().count(new_refresh) == 1
    # Never in clear: not in any table, not in any log record.
    secrets_seen = [access, refresh, new_refresh, *auth_server.access]
    everything = dump(db)
    logs = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for secret in secrets_seen:
        assert secret not in everything
        assert secret not in logs


def test_access_token_refreshed_before_it_expires_and_rotation_stored(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db  # SQLite only: the same SQL runs on PostgreSQL in the tests above
    tenant = make_tenant(db)
    account_id, access, _ = connect_with_tokens(
        db, tenant, oauth_user, auth_server, testidp, expires_at=utcnow() + timedelta(seconds=30)
    )
    version = stored_grant(db, account_id).version
    source = TokenSource(db, SecretBox.from_settings(testidp), testidp)
    token = source.access_token(account_id)  # 30 s left < the 120 s margin: refreshed first
    assert token.get_secret_value() != access
    assert auth_server.active_user(token.get_secret_value()) == oauth_user.email
    grant = stored_grant(db, account_id)
    assert grant.version == version + 1 and grant.refreshed_at is not None
    assert grant.refreshing_owner is None
    assert stored_refresh_token(db, account_id, testidp) == auth_server.current_refresh_tokens()[-1]
    # Good for an hour now: the next call uses it without asking the provider.
    before = auth_server.refresh_requests
    assert source.access_token(account_id).get_secret_value() == token.get_secret_value()
    assert auth_server.refresh_requests == before


def test_two_threads_refreshing_at_once_make_one_request(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(db)
    account_id, _, _ = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    expire_stored_access_token(db, account_id)
    auth_server.token_delay = 0.4
    before = auth_server.refresh_requests
    got: list[str] = []
    box = SecretBox.from_settings(testidp)

    def work(owner: str) -> None:
        got.append(TokenSource(db, box, testidp, owner=owner).access_token(account_id).get_secret_value())

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert auth_server.refresh_requests == before + 1
    assert len(got) == 2 and got[0] == got[1]
    assert stored_refresh_token(db, account_id, testidp) in auth_server.current_refresh_tokens()


_WORKER = """
import sys
from core.db import make_engine
from core.secrets import SecretBox, new_key
from core.settings import get_settings
from sync.oauth_tokens import TokenSource
settings = get_settings()
engine = make_engine(settings.resolved_database_url)
token = TokenSource(engine, SecretBox.from_settings(settings), settings, owner=sys.argv[2])
print(token.access_token(int(sys.argv[1])).get_secret_value()[-6:])
"""


def test_two_worker_processes_refreshing_at_once_lose_no_refresh_token(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    """Rotation under two processes: one refresh (the compare-and-set on the grant's version
    collapses them), the stored refresh token is the provider's live one, and the old one is
    never used again (the test server would revoke the whole grant on reuse). One backend:
    the threads test above runs the same SQL on both."""
    db = sqlite_db
    tenant = make_tenant(db)
    account_id, _, old_refresh = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    expire_stored_access_token(db, account_id)
    auth_server.token_delay = 0.5
    before, reuse = auth_server.refresh_requests, auth_server.reuse_detected
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(account_id), f"proc{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert outputs[0][0] == outputs[1][0]  # both use the one new access token
    assert auth_server.refresh_requests == before + 1
    assert auth_server.reuse_detected == reuse
    current = stored_refresh_token(db, account_id, testidp)
    assert current != old_refresh and current in auth_server.current_refresh_tokens()


def test_revoked_refresh_token_needs_reconnect_and_stops_trying(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(db)
    make_user(db, tenant, "boss@acme.test", is_admin=True)
    account_id, _, refresh = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    auth_server.revoke_family_of(refresh)  # the user removed the app's access at the provider
    expire_stored_access_token(db, account_id)
    before = auth_server.refresh_requests
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id)
        assert summary.status == "failed"
        assert summary.failure is not None and summary.failure.code == "oauth_reconnect_needed"
        account = _account(db, account_id)
        assert account.status is AccountStatus.NEEDS_RECONNECT
        assert account.last_error_code == "oauth_reconnect_needed"
        assert "Connect the mailbox again" in summary.failure.message
        assert stored_grant(db, account_id).usable is False
        # No hammering: later passes (even ignoring backoff) do not ask the provider again.
        for _ in range(3):
            again = engine.sync_account(account_id, ignore_backoff=True)
            assert again.status == "skipped" and "reconnected" in again.skip_reason
    assert auth_server.refresh_requests == before + 1
    # The tenant's admin is told once (not at every skipped pass), by mail on the send queue.
    with session_scope(db) as s:
        notices = s.exec(select(OutboundMail).where(OutboundMail.kind == MailKind.NOTIFICATION)).all()
        assert [n.recipients for n in notices] == [["boss@acme.test"]]
        assert account_email(db, account_id) in notices[0].subject


def test_provider_down_is_transient_with_backoff(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db  # SQLite only: the same SQL runs on PostgreSQL in the tests above
    tenant = make_tenant(db)
    account_id, _, _ = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    expire_stored_access_token(db, account_id)
    auth_server.down = True
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id)
    assert summary.failure is not None and summary.failure.code == "oauth_provider_unavailable"
    account = _account(db, account_id)
    assert account.status is AccountStatus.CONNECTION_FAILED
    assert account.next_attempt_at is not None and account.next_attempt_at > utcnow()
    grant = stored_grant(db, account_id)
    assert grant.usable and grant.refresh_failures == 1 and grant.next_refresh_at is not None
    assert grant.refreshing_owner is None
    # Back up, and the backoff over: the next pass refreshes and syncs.
    auth_server.down = False
    with session_scope(db) as session:
        row = session.get_one(OAuthGrant, grant.id)
        row.next_refresh_at = None
        session.add(row)
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id, ignore_backoff=True)
    assert summary.status == "ok", summary.errors
    assert stored_grant(db, account_id).refresh_failures == 0


def test_dovecot_unavailable_is_transient_not_a_credentials_failure(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    """The token is fine but Dovecot cannot introspect it (the authorization server is down):
    NO [UNAVAILABLE] is a temporary failure, nothing is refreshed, no auth failure counted."""
    db = sqlite_db  # SQLite only: the same SQL runs on PostgreSQL in the tests above
    tenant = make_tenant(db)
    account_id, _, _ = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    auth_server.down = True
    before = auth_server.refresh_requests
    started = time.monotonic()
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id)
    assert time.monotonic() - started < 10
    assert summary.failure is not None and summary.failure.code == "connection_lost"
    account = _account(db, account_id)
    assert account.status is AccountStatus.CONNECTION_FAILED and account.auth_failures == 0
    assert auth_server.refresh_requests == before


def test_key_rotation_reencrypts_tokens(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db
    tenant = make_tenant(db)
    account_id, access, refresh = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    old, new = SecretBox.from_settings(testidp), SecretBox(new_key())
    with session_scope(db) as session:
        sync_state.reencrypt_secrets(session=session, old=old, new=new)
    grant = stored_grant(db, account_id)
    assert new.decrypt(grant.refresh_token_encrypted or "").get_secret_value() == refresh
    assert new.decrypt(grant.access_token_encrypted or "").get_secret_value() == access
    assert not old.can_decrypt(grant.refresh_token_encrypted or "")


def test_access_token_expiring_mid_sync_is_refreshed_on_the_reconnect(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    """Mid-pass the provider ends the token and the server drops the connection: the pass
    reconnects, the login with the old token is refused, one refresh, and the pass completes."""
    db = sqlite_db
    tenant = make_tenant(db)
    # Many small batches: fetching runs a few batches ahead, some remain after the first store.
    oauth_user.dovecot.append_many(
        oauth_user.email, "INBOX", [MAIL.replace(b"q1@", f"m{n}@".encode()) for n in range(16)]
    )
    account_id, _, _ = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    before = auth_server.refresh_requests
    kicked: list[int] = []

    def progress(account: int, role: object, done: int, total: int) -> None:
        if not kicked:
            auth_server.expire_access_tokens()
            kicked.append(oauth_user.dovecot.kick(oauth_user.email))

    # Two per batch: the batch cut short is fetched again in halves after the reconnect.
    small_batches = testidp.model_copy(update={"sync_batch_size": 2})
    with SyncEngine(db=db, settings=small_batches, progress=progress) as engine:
        summary = engine.sync_account(account_id)
    assert kicked and kicked[0] >= 1
    assert summary.status == "ok", summary.errors
    assert summary.new_messages == 16
    assert auth_server.refresh_requests == before + 1
