"""Connecting by consent through the services (`sync.oauth_flow`): a new mailbox, the state's
rules (bound, one use, short-lived), a PKCE verifier that does not match, reconnecting and
switching between password and OAuth without a resync, and disconnecting with revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, update
from sqlmodel import col, select

from core.caller import Caller
from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import Settings
from core.types import AccountStatus, Security, utcnow
from crm import mailboxes
from crm.models import FolderState, ImapUid, MailAccount, OAuthConsent, OAuthGrant
from sync import oauth_flow
from sync.account_pass import SyncEngine
from tests.factories import grant, make_tenant, make_user
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import PROVIDER, OAuthUser
from tests.oauth.consent import allow, callback_params
from tests.oauth.test_sync_tokens import MAIL

REDIRECT = "http://127.0.0.1:9/api/oauth/callback"


def _start(caller: Caller, settings: Settings, *, binding: str = "b1", account_id: int | None = None) -> str:
    started = oauth_flow.start(
        sessions=session_scope,
        caller=caller,
        provider=PROVIDER,
        redirect_uri=REDIRECT,
        binding=binding,
        box=SecretBox.from_settings(settings),
        settings=settings,
        account_id=account_id,
    )
    return started.authorization_url


def _finish(caller: Caller, settings: Settings, params: dict[str, str], *, binding: str = "b1") -> int:
    result = oauth_flow.complete(
        sessions=session_scope,
        caller=caller,
        state=params.get("state", ""),
        code=params.get("code"),
        error=params.get("error"),
        binding=binding,
        box=SecretBox.from_settings(settings),
        settings=settings,
    )
    assert result.check is not None and result.check.ok
    return result.account.id


def _connect(caller: Caller, settings: Settings, user: OAuthUser, account_id: int | None = None) -> int:
    url = _start(caller, settings, account_id=account_id)
    return _finish(caller, settings, callback_params(allow(url, user.email)))


def _refused(code: str, call: object) -> None:
    assert callable(call)
    with pytest.raises(DomainError) as caught:
        call()
    assert caught.value.code == code, caught.value


def test_consent_connects_a_new_mailbox_that_syncs(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(db)
    admin = Caller.operator(tenant)
    url = _start(admin, testidp)
    assert "code_challenge_method=S256" in url and "state=" in url
    account_id = _finish(admin, testidp, callback_params(allow(url, oauth_user.email)))
    with session_scope(db) as session:
        view = mailboxes.get_account(session=session, caller=admin, account_id=account_id)
        # The consent row: the state only as a hash, the verifier encrypted, used once.
        consent = session.exec(select(OAuthConsent)).one()
        assert consent.used_at is not None and len(consent.state_hash) == 64
        assert consent.state_hash not in url
    assert view.email == oauth_user.email and view.username == oauth_user.email
    assert view.oauth is not None and view.oauth.provider == PROVIDER and view.oauth.state == "connected"
    assert view.oauth.scopes == ("mail", "openid", "email")
    oauth_user.dovecot.append(oauth_user.email, "INBOX", MAIL)
    with SyncEngine(db=db, settings=testidp) as engine:
        summary = engine.sync_account(account_id)
    assert (summary.status, summary.new_messages) == ("ok", 1)


def test_state_is_bound_single_use_and_short_lived(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db
    tenant = make_tenant(db)
    admin = Caller.operator(tenant)
    other_admin_id = make_user(db, tenant, "boss@acme.test", is_admin=True)
    other = Caller(tenant_id=tenant, user_id=other_admin_id, role=admin.role)
    params = callback_params(allow(_start(admin, testidp), oauth_user.email))
    # Another session of the same caller, another caller, a made-up state: all refused...
    _refused("oauth_state_invalid", lambda: _finish(admin, testidp, params, binding="b2"))
    _refused("oauth_state_invalid", lambda: _finish(other, testidp, params))
    _refused("oauth_state_invalid", lambda: _finish(admin, testidp, {**params, "state": "forged"}))
    # ...and none of them used it up: the right session connects, once.
    _finish(admin, testidp, params)
    _refused("oauth_state_invalid", lambda: _finish(admin, testidp, params))
    # An expired state is refused too.
    params = callback_params(allow(_start(admin, testidp), oauth_user.email))
    with session_scope(db) as session:
        session.execute(
            update(OAuthConsent)
            .where(col(OAuthConsent.used_at).is_(None))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    _refused("oauth_state_invalid", lambda: _finish(admin, testidp, params))
    # A member cannot connect a new mailbox (admins only), and the provider saying no saves nothing.
    member = Caller(tenant_id=tenant, user_id=make_user(db, tenant, "m@acme.test"), role=admin.role.MEMBER)
    _refused("admin_required", lambda: _start(member, testidp))
    params = callback_params(allow(_start(admin, testidp), oauth_user.email))
    _refused(
        "oauth_denied", lambda: _finish(admin, testidp, {"state": params["state"], "error": "access_denied"})
    )
    with session_scope(db) as session:
        assert session.exec(select(func.count()).select_from(MailAccount)).one() == 1


def test_pkce_verifier_mismatch_is_refused_and_nothing_saved(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db
    tenant = make_tenant(db)
    admin = Caller.operator(tenant)
    params = callback_params(allow(_start(admin, testidp), oauth_user.email))
    with session_scope(db) as session:  # someone holding the code but not the verifier
        session.execute(
            update(OAuthConsent).values(
                verifier_encrypted=SecretBox.from_settings(testidp).encrypt(SecretStr("x" * 64))
            )
        )
    _refused("oauth_code_refused", lambda: _finish(admin, testidp, params))
    with session_scope(db) as session:
        assert session.exec(select(func.count()).select_from(MailAccount)).one() == 0


def _counts(db: Engine, account_id: int) -> tuple[int, list[tuple[str, int | None]]]:
    with session_scope(db) as session:
        uids = session.exec(
            select(func.count()).select_from(ImapUid).where(ImapUid.account_id == account_id)
        ).one()
        cursors = session.exec(
            select(FolderState.name, FolderState.uidnext).where(FolderState.account_id == account_id)
        ).all()
        return int(uids), sorted((str(n), u) for n, u in cursors)


def test_reconnect_and_switching_keep_mail_cursors_and_access(
    db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(db)
    admin = Caller.operator(tenant)
    box = SecretBox.from_settings(testidp)
    # A password account on the same server, synced.
    with session_scope(db) as session:
        account_id = mailboxes.add_account(
            session=session,
            caller=admin,
            data=mailboxes.AccountInput(
                email=oauth_user.email,
                imap_host=oauth_user.dovecot.host,
                imap_port=oauth_user.dovecot.port,
                imap_security=Security.PLAIN,
                username=oauth_user.email,
            ),
            password=SecretStr(oauth_user.password),
            box=box,
        ).id
    member = make_user(db, tenant, "mia@acme.test")
    grant(db, tenant, account_id, member)
    oauth_user.dovecot.append(oauth_user.email, "INBOX", MAIL)
    engine = SyncEngine(db=db, settings=testidp)
    assert engine.sync_account(account_id).new_messages == 1
    before = _counts(db, account_id)
    # Password -> OAuth: a consent for the same address takes over the same account.
    assert _connect(admin, testidp, oauth_user) == account_id
    summary = engine.sync_account(account_id, ignore_backoff=True)
    assert (summary.status, summary.new_messages) == ("ok", 0)
    assert _counts(db, account_id) == before
    # Revoked at the provider: needs reconnecting; reconnecting (by the mailbox's own user,
    # a member who can see it) resumes where it was.
    with session_scope(db) as session:
        row = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).one()
        refresh = box.decrypt(row.refresh_token_encrypted or "").get_secret_value()
        session.execute(update(OAuthGrant).values(access_expires_at=utcnow() - timedelta(minutes=5)))
    auth_server.revoke_family_of(refresh)
    assert engine.sync_account(account_id).failure is not None
    mia = Caller(tenant_id=tenant, user_id=member, role=admin.role.MEMBER)
    assert _connect(mia, testidp, oauth_user, account_id=account_id) == account_id
    summary = engine.sync_account(account_id, ignore_backoff=True)
    assert (summary.status, summary.new_messages) == ("ok", 0)
    assert _counts(db, account_id) == before
    with session_scope(db) as session:
        view = mailboxes.get_account(session=session, caller=mia, account_id=account_id)
    assert view.status is AccountStatus.OK and view.oauth is not None
    # Reconnecting as another address is refused.
    other = f"x{oauth_user.email}"
    oauth_user.dovecot.add_user(other, "pw-x")
    url = _start(mia, testidp, account_id=account_id)
    _refused("oauth_email_mismatch", lambda: _finish(mia, testidp, callback_params(allow(url, other))))
    # OAuth -> password: the tokens go, the password logs in, still no resync.
    with session_scope(db) as session:
        mailboxes.set_password(
            session=session,
            caller=admin,
            account_id=account_id,
            password=SecretStr(oauth_user.password),
            box=box,
        )
        assert session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).first() is None
    summary = engine.sync_account(account_id, ignore_backoff=True)
    assert (summary.status, summary.new_messages) == ("ok", 0)
    engine.close()


def test_disconnect_revokes_at_the_provider_and_waits_for_a_reconnect(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    db = sqlite_db
    tenant = make_tenant(db)
    admin = Caller.operator(tenant)
    account_id = _connect(admin, testidp, oauth_user)
    with session_scope(db) as session:
        row = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).one()
        refresh = (
            SecretBox.from_settings(testidp).decrypt(row.refresh_token_encrypted or "").get_secret_value()
        )
    result = oauth_flow.disconnect(
        sessions=session_scope, caller=admin, account_id=account_id, box=SecretBox.from_settings(testidp)
    )
    assert result.revoked and result.revocation_supported
    assert auth_server.revocations[-1] == refresh
    assert refresh not in auth_server.current_refresh_tokens()
    with session_scope(db) as session:
        view = mailboxes.get_account(session=session, caller=admin, account_id=account_id)
        row = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).one()
        assert row.refresh_token_encrypted is None and row.access_token_encrypted is None
    assert view.status is AccountStatus.NEEDS_RECONNECT and view.last_error_code == "oauth_disconnected"
    assert view.oauth is not None and view.oauth.state == "needs_reconnect"
    summary = SyncEngine(db=db, settings=testidp).sync_account(account_id)
    assert summary.status == "skipped"
