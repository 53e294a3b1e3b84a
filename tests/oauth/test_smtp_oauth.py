"""Sending with an OAuth2 access token: the send queue authenticates with XOAUTH2 at an aiosmtpd
that checks each token against the test authorization server, files the copy in Sent over IMAP
XOAUTH2, and refreshes a refused token once (nothing sent twice). OAUTHBEARER when a server
offers only that."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import select

from core.caller import Caller
from core.connection import BearerToken
from core.db import session_scope
from core.errors import InvalidInput
from core.secrets import SecretBox
from core.settings import Settings
from core.types import Security
from crm.models import MailAccount, OAuthGrant
from crm.outbound import queue
from crm.outbound.compose import ComposeMode, Draft, send_mail
from crm.outbound.smtp_setup import SmtpSaved, SmtpSettingsIn, SmtpTestFailed, save_smtp_settings
from crm.outbound.views import MailKind, OutboundState
from sync import errors
from sync.account_pass import SyncEngine
from sync.send_queue import work_queue
from sync.smtp_check import SmtpEndpoint, smtp_login
from sync.smtp_setup import make_test_sender
from tests.factories import caller_of, grant, make_tenant, make_user
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import OAuthUser
from tests.oauth.helpers import connect_with_tokens, expire_stored_access_token
from tests.oauth.smtp import oauth_smtp


def _queue(db: Engine, tenant: int, user_id: int, account_id: int, subject: str) -> None:
    with session_scope(db) as session:
        result = send_mail(
            session=session,
            caller=caller_of(db, tenant, user_id),
            draft=Draft(html="<p>Hi</p>", to=("buyer@globex.test",), subject=subject),
            mode=ComposeMode.COMPOSE,
            account_id=account_id,
            undo_seconds=0,
        )
    assert result.mail is not None


def test_send_queue_sends_with_xoauth2_and_refreshes_a_refused_token_once(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(db)
    user_id = make_user(db, tenant, "mia@acme.test", first_name="Mia")
    with oauth_smtp(auth_server) as smtp:
        account_id, _, _ = connect_with_tokens(
            db, tenant, oauth_user, auth_server, testidp, smtp_port=smtp.port
        )
        grant(db, tenant, account_id, user_id)
        assert SyncEngine(db=db, settings=testidp).sync_account(account_id).status == "ok"
        _queue(db, tenant, user_id, account_id, "First")
        summary = work_queue(db=db, settings=testidp)
        assert (summary.sent, summary.stored, summary.sent_folder_errors) == (1, 1, [])
        assert smtp.handler.logins == [("XOAUTH2", oauth_user.email, True)]
        assert len(oauth_user.dovecot.fetch(oauth_user.email, "Sent")) == 1
        # The provider ended the token early: AUTH refused, one refresh, AUTH again, sent once.
        auth_server.expire_access_tokens()
        before = auth_server.refresh_requests
        _queue(db, tenant, user_id, account_id, "Second")
        summary = work_queue(db=db, settings=testidp)
        assert (summary.sent, summary.failed, summary.deferred) == (1, 0, 0)
        assert [ok for _, _, ok in smtp.handler.logins[1:]] == [False, True]
        assert auth_server.refresh_requests == before + 1
        assert [r[2].count(b"Subject: Second") for r in smtp.handler.received] == [0, 1]
        # The user withdrew the app's access: the mail waits (deferred) for a reconnect, and the
        # provider is asked once, not at every retry.
        with session_scope(db) as session:
            row = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).one()
            refresh = SecretBox.from_settings(testidp).decrypt(row.refresh_token_encrypted or "")
        auth_server.revoke_family_of(refresh.get_secret_value())
        auth_server.expire_access_tokens()
        before = auth_server.refresh_requests
        _queue(db, tenant, user_id, account_id, "Third")
        summary = work_queue(db=db, settings=testidp)
        assert (summary.sent, summary.failed, summary.deferred) == (0, 0, 1)
        assert auth_server.refresh_requests == before + 1


def test_smtp_check_uses_oauthbearer_when_only_that_is_offered(
    settings: Settings, auth_server: AuthServer
) -> None:
    access, _ = auth_server.issue("ann@example.test")
    with oauth_smtp(auth_server, only="OAUTHBEARER") as smtp:
        endpoint = SmtpEndpoint(
            host="127.0.0.1",
            port=smtp.port,
            security=Security.PLAIN,
            username="ann@example.test",
            allow_private_hosts=True,
        )
        smtp_login(endpoint, BearerToken(SecretStr(access)))
        with pytest.raises(errors.AuthFailed):
            smtp_login(endpoint, BearerToken(SecretStr("at-not-a-token")))
        # A password cannot log in where only OAuth is offered: said clearly, not sent.
        with pytest.raises(errors.SyncError) as refused:
            smtp_login(endpoint, SecretStr("a password"))
        assert refused.value.code == "smtp_auth_unavailable"
    assert [(m, ok) for m, _, ok in smtp.handler.logins] == [("OAUTHBEARER", True), ("OAUTHBEARER", False)]


def _set_up(
    db: Engine, tenant: int, account_id: int, settings: Settings, port: int, **kw: object
) -> SmtpSaved:
    given: dict[str, object] = {
        "host": "127.0.0.1",
        "security": Security.PLAIN,
        "port": port,
        "test_to": "check@globex.test",
    }
    box = SecretBox.from_settings(settings)
    return save_smtp_settings(
        sessions=lambda: session_scope(db),
        caller=Caller.operator(tenant),
        account_id=account_id,
        given=SmtpSettingsIn(**(given | kw)),  # type: ignore[arg-type]
        box=box,
        send_test=make_test_sender(settings, db=db, box=box),
    )


def test_smtp_setup_of_an_oauth_account_sends_its_test_mail_with_the_token(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    """The set-up's test mail logs in the way the queue will send: XOAUTH2 with the account's
    token (refreshed once when refused); no password is taken for an OAuth account."""
    tenant = make_tenant(db)
    user_id = make_user(db, tenant, "mia@acme.test", first_name="Mia")
    account_id, _, refresh = connect_with_tokens(db, tenant, oauth_user, auth_server, testidp)
    with oauth_smtp(auth_server) as smtp:
        with pytest.raises(InvalidInput) as password:
            _set_up(db, tenant, account_id, testidp, smtp.port, password=SecretStr("an app password"))
        assert password.value.code == "smtp_password_oauth" and smtp.handler.logins == []

        auth_server.expire_access_tokens()  # the stored token is refused: one refresh, then sent
        before = auth_server.refresh_requests
        saved = _set_up(db, tenant, account_id, testidp, smtp.port)
        assert smtp.handler.logins == [
            ("XOAUTH2", oauth_user.email, False),
            ("XOAUTH2", oauth_user.email, True),
        ]
        assert auth_server.refresh_requests == before + 1
        [(mail_from, rcpt_tos, raw)] = smtp.handler.received
        assert (mail_from, rcpt_tos) == (oauth_user.email, ["check@globex.test"])
        assert b"crm-inbox: test mail" in raw
        assert (saved.username, saved.test.state) == (oauth_user.email, OutboundState.SENT)
        with session_scope(db) as session:
            row = session.get_one(MailAccount, account_id)
            assert (row.smtp_host, row.smtp_port, row.smtp_security) == (
                "127.0.0.1",
                smtp.port,
                Security.PLAIN,
            )
            assert (row.smtp_username, row.smtp_secret_encrypted) == (None, None)

        # What was saved is what the queue sends with.
        grant(db, tenant, account_id, user_id)
        assert SyncEngine(db=db, settings=testidp).sync_account(account_id).status == "ok"
        _queue(db, tenant, user_id, account_id, "After the set-up")
        assert work_queue(db=db, settings=testidp).sent == 1
        assert smtp.handler.logins[-1] == ("XOAUTH2", oauth_user.email, True)

        # Access withdrawn: no token at all, said in words; the saved settings stay as they were.
        auth_server.revoke_family_of(refresh)
        auth_server.expire_access_tokens()
        expire_stored_access_token(db, account_id)
        with pytest.raises(SmtpTestFailed) as refused:
            _set_up(db, tenant, account_id, testidp, smtp.port + 1)
        assert refused.value.fields["cause"] == "oauth"
        assert "Reconnect the account with OAuth" in refused.value.message
        with session_scope(db) as session:
            assert session.get_one(MailAccount, account_id).smtp_port == smtp.port
            failed = queue.mail_log(session=session, caller=Caller.operator(tenant), kinds=[MailKind.TEST])
        assert [m.state for m in failed] == [OutboundState.FAILED, OutboundState.SENT]
