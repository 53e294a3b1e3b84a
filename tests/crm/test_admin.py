"""Mailbox administration services (`crm.admin`) on SQLite and PostgreSQL.

Connection checks use the real verifier (`sync.check.make_verifier`) against the session's
Dovecot and an aiosmtpd on loopback; `processed_any` comes from really syncing a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core import problems
from core.connection import ConnectionSettings
from core.db import session_scope
from core.secrets import SecretBox
from core.settings import Settings
from core.types import AccountStatus, Security
from crm import accounts, admin
from crm.errors import InvalidInput, NotFound, QuotaExceeded, Refused
from crm.models import (
    AccountAccess,
    FetchFailure,
    FolderState,
    MailAccount,
    Signature,
    SyncRun,
    Tenant,
    User,
)
from devtools.samples import build_message
from signatures import KNOWN_TAGS
from sync.check import CheckResult, Problem, make_verifier
from sync.engine import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER, free_port, smtp_server

# ---------------------------------------------------------------------------------------------
# helpers


@dataclass
class RecordingVerifier:
    """The real verifier, remembering what it was asked to check (to prove when it was not)."""

    settings: Settings
    calls: list[ConnectionSettings] = field(default_factory=list)

    def __call__(self, conn: ConnectionSettings) -> CheckResult:
        self.calls.append(conn)
        return make_verifier(self.settings)(conn)


def offline_input(email: str) -> accounts.AccountInput:
    """Settings of an account added without a check (nothing connects to it in these tests)."""
    return accounts.AccountInput(
        email=email, imap_host="imap.acme.test", imap_port=993, imap_security=Security.TLS, username=email
    )


def add_offline(db: Engine, tenant_id: int, email: str) -> int:
    with session_scope(db) as session:
        saved = admin.connect_account(
            session=session,
            tenant_id=tenant_id,
            data=offline_input(email),
            password=SecretStr("pw"),
            box=SecretBox.from_settings(),
        )
        assert not saved.checked
        return saved.account.id or 0


def dovecot_input(mailbox: MailboxUser, email: str | None = None) -> accounts.AccountInput:
    dovecot = mailbox.dovecot
    return accounts.AccountInput(
        email=email or f"{mailbox.name}@acme.test",
        imap_host="127.0.0.1",
        imap_port=dovecot.ssl_port or 0,
        imap_security=Security.TLS,
        username=mailbox.name,
        ca_file=str(dovecot.ca_file),
    )


def make_user(db: Engine, tenant_id: int, email: str, **fields: str) -> int:
    with session_scope(db) as session:
        user = accounts.create_user(session=session, tenant_id=tenant_id, email=email)
        for name, value in fields.items():
            setattr(user, name, value)
        session.add(user)
        session.flush()
        return user.id or 0


def run(db: Engine, fn: Callable[[Session], object]) -> object:
    with session_scope(db) as session:
        return fn(session)


def deliver(mailbox: MailboxUser, subject: str) -> None:
    mailbox.dovecot.append(
        mailbox.name,
        "INBOX",
        build_message(subject=subject, from_="client@customer.test", to=f"{mailbox.name}@acme.test"),
    )


# ---------------------------------------------------------------------------------------------
# 1. quota


def test_quota_counts_active_accounts_only(db: Engine) -> None:
    tenant_id = make_tenant(db, name="Acme", quota=2)
    first = add_offline(db, tenant_id, "a@acme.test")
    add_offline(db, tenant_id, "b@acme.test")
    with pytest.raises(QuotaExceeded) as refused:
        add_offline(db, tenant_id, "c@acme.test")
    assert "The plan of Acme allows 2 active mail account(s) and 2 are in use" in str(refused.value)
    assert "crm-inbox tenant quota" in str(refused.value)

    run(db, lambda s: admin.deactivate_account(session=s, tenant_id=tenant_id, account_id=first))
    third = add_offline(db, tenant_id, "c@acme.test")  # the deactivated one does not count
    assert third

    with pytest.raises(QuotaExceeded, match="allows 2 active mail account"):
        run(db, lambda s: admin.reactivate_account(session=s, tenant_id=tenant_id, account_id=first))
    with session_scope(db) as session:
        assert session.get_one(MailAccount, first).active is False

    view = run(db, lambda s: admin.set_quota(session=s, tenant_id=tenant_id, quota=3))
    assert isinstance(view, admin.TenantView)
    assert (view.account_quota, view.active_accounts, view.inactive_accounts) == (3, 2, 1)
    run(db, lambda s: admin.reactivate_account(session=s, tenant_id=tenant_id, account_id=first))
    with session_scope(db) as session:
        assert admin.tenant_view(session=session, tenant_id=tenant_id).active_accounts == 3
        with pytest.raises(InvalidInput, match="0 or more"):
            admin.set_quota(session=session, tenant_id=tenant_id, quota=-1)


def test_quota_refusal_comes_before_the_connection_check(db: Engine, settings: Settings) -> None:
    tenant_id = make_tenant(db, quota=0)
    verify = RecordingVerifier(settings)
    with session_scope(db) as session, pytest.raises(QuotaExceeded):
        admin.connect_account(
            session=session,
            tenant_id=tenant_id,
            data=offline_input("a@acme.test"),
            password=SecretStr("pw"),
            box=SecretBox.from_settings(),
            verify=verify,
        )
    assert verify.calls == []


# ---------------------------------------------------------------------------------------------
# 3. connection check before saving


def test_connect_account_checks_login_first(
    db: Engine, settings: Settings, mailbox_user: MailboxUser
) -> None:
    tenant_id = make_tenant(db)
    verify = RecordingVerifier(settings)
    box = SecretBox.from_settings()
    wrong = "definitely-Wrong-77"
    with session_scope(db) as session, pytest.raises(admin.ConnectionCheckFailed) as refused:
        admin.connect_account(
            session=session,
            tenant_id=tenant_id,
            data=dovecot_input(mailbox_user),
            password=SecretStr(wrong),
            box=box,
            verify=verify,
        )
    message = str(refused.value)
    assert message.startswith(f"Authentication failed for {mailbox_user.name} on 127.0.0.1")
    assert "Nothing was saved" in message and "--force" in message
    assert wrong not in message and "AUTHENTICATIONFAILED" not in message
    assert isinstance(refused.value.check, CheckResult)
    assert refused.value.check.problem is Problem.AUTHENTICATION
    with session_scope(db) as session:
        assert session.exec(select(func.count(col(MailAccount.id)))).one() == 0

    with session_scope(db) as session:
        forced = admin.connect_account(
            session=session,
            tenant_id=tenant_id,
            data=dovecot_input(mailbox_user, email="forced@acme.test"),
            password=SecretStr(wrong),
            box=box,
            verify=verify,
            force=True,
        )
        assert forced.check is not None and not forced.check.ok
        assert forced.account.last_error_code is not None
        assert (
            problems.render(forced.account.last_error_code, forced.account.last_error_params) or ""
        ).startswith("Authentication failed")

    with session_scope(db) as session:
        saved = admin.connect_account(
            session=session,
            tenant_id=tenant_id,
            data=dovecot_input(mailbox_user),
            password=SecretStr(mailbox_user.password),
            box=box,
            verify=verify,
        )
        assert saved.checked and saved.check is not None and saved.check.ok
        assert saved.account.last_error_code is None
        assert box.decrypt(saved.account.secret_encrypted) == SecretStr(mailbox_user.password)
    assert len(verify.calls) == 3


def test_connect_account_with_smtp_checks_and_stores_smtp_login(
    db: Engine, settings: Settings, mailbox_user: MailboxUser
) -> None:
    tenant_id = make_tenant(db)
    box = SecretBox.from_settings()
    with smtp_server(mailbox_user.dovecot, Security.STARTTLS) as server:
        smtp = admin.SmtpInput(
            host="127.0.0.1",
            port=server.port,
            security=Security.STARTTLS,
            username=SMTP_USER,
            password=SecretStr("wrong-smtp-pw"),
        )
        with session_scope(db) as session, pytest.raises(admin.ConnectionCheckFailed) as refused:
            admin.connect_account(
                session=session,
                tenant_id=tenant_id,
                data=dovecot_input(mailbox_user),
                password=SecretStr(mailbox_user.password),
                box=box,
                smtp=smtp,
                verify=make_verifier(settings),
            )
        assert "SMTP: Authentication failed for sender@acme.test" in str(refused.value)
        assert "wrong-smtp-pw" not in str(refused.value)

        with session_scope(db) as session:
            saved = admin.connect_account(
                session=session,
                tenant_id=tenant_id,
                data=dovecot_input(mailbox_user),
                password=SecretStr(mailbox_user.password),
                box=box,
                smtp=admin.SmtpInput(
                    host="127.0.0.1", port=server.port, username=SMTP_USER, password=SecretStr(SMTP_PASSWORD)
                ),
                verify=make_verifier(settings),
            )
            account_id = saved.account.id or 0
            assert saved.check is not None and saved.check.ok, saved.check
            account = saved.account
            assert (account.smtp_security, account.smtp_username) == (Security.STARTTLS, SMTP_USER)
            assert SMTP_PASSWORD not in (account.smtp_secret_encrypted or "")
    with session_scope(db) as session:
        conn = admin.connection_settings_of(
            session=session, tenant_id=tenant_id, account_id=account_id, box=box
        )
    assert conn.smtp_password == SecretStr(SMTP_PASSWORD) and conn.password == SecretStr(
        mailbox_user.password
    )


def test_blocked_host_is_refused_before_saving(db: Engine, settings: Settings) -> None:
    tenant_id = make_tenant(db)
    for host, config, reason in (
        ("169.254.169.254", settings, "cloud metadata address"),
        ("127.0.0.1", settings.model_copy(update={"allow_private_hosts": False}), "loopback"),
    ):
        data = accounts.AccountInput(
            email="x@acme.test",
            imap_host=host,
            imap_port=free_port(),
            imap_security=Security.TLS,
            username="x",
        )
        with session_scope(db) as session, pytest.raises(admin.ConnectionCheckFailed) as refused:
            admin.connect_account(
                session=session,
                tenant_id=tenant_id,
                data=data,
                password=SecretStr("pw"),
                box=SecretBox.from_settings(),
                verify=make_verifier(config),
            )
        assert reason in str(refused.value)
        assert refused.value.check.ok is False


def test_edit_account_rechecks_only_connection_changes(
    db: Engine, settings: Settings, mailbox_user: MailboxUser
) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user)
    box = SecretBox.from_settings()
    verify = RecordingVerifier(settings)

    def edit(changes: admin.AccountChanges, force: bool = False) -> admin.SaveResult:
        with session_scope(db) as session:
            return admin.edit_account(
                session=session,
                tenant_id=tenant_id,
                account_id=account_id,
                changes=changes,
                box=box,
                verify=verify,
                force=force,
            )

    result = edit(admin.AccountChanges(display_name="Sales team", sync_interval_seconds=120))
    assert (result.checked, verify.calls) == (False, [])
    assert (result.account.display_name, result.account.sync_interval_seconds) == ("Sales team", 120)

    closed = free_port()
    with pytest.raises(admin.ConnectionCheckFailed) as refused:
        edit(admin.AccountChanges(imap_port=closed))
    assert f"127.0.0.1:{closed} refused the connection" in str(refused.value)
    assert refused.value.check.problem is Problem.PORT  # type: ignore[attr-defined]
    with pytest.raises(admin.ConnectionCheckFailed, match="Authentication failed"):
        edit(admin.AccountChanges(password=SecretStr("bad-one-1")))
    with session_scope(db) as session:
        account = session.get_one(MailAccount, account_id)
        assert account.imap_port == mailbox_user.dovecot.ssl_port
        assert box.decrypt(account.secret_encrypted) == SecretStr(mailbox_user.password)

    forced = edit(admin.AccountChanges(imap_port=closed), force=True)
    assert forced.account.imap_port == closed and "refused the connection" in (
        problems.render(forced.account.last_error_code, forced.account.last_error_params) or ""
    )

    # Back to working settings on STARTTLS: re-checked with the stored password, accepted.
    with session_scope(db) as session:
        account = session.get_one(MailAccount, account_id)
        account.status, account.auth_failures = AccountStatus.NEEDS_CREDENTIALS, 3
    fixed = edit(
        admin.AccountChanges(
            imap_port=mailbox_user.dovecot.port, imap_security=Security.STARTTLS, username=mailbox_user.name
        )
    )
    assert fixed.check is not None and fixed.check.ok
    assert verify.calls[-1].password == SecretStr(mailbox_user.password)
    assert (fixed.account.status, fixed.account.auth_failures) == (AccountStatus.NEW, 0)
    with pytest.raises(InvalidInput, match="not a valid port"):
        edit(admin.AccountChanges(imap_port=70000))
    with pytest.raises(InvalidInput, match="SMTP host"):
        edit(admin.AccountChanges(smtp_port=587))


# ---------------------------------------------------------------------------------------------
# 2. lifecycle


def test_deactivate_hides_keeps_mail_and_resumes(db: Engine, mailbox_user: MailboxUser) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user)
    user_id = make_user(db, tenant_id, "ann@acme.test")
    run(
        db,
        lambda s: admin.grant_access(session=s, tenant_id=tenant_id, account_id=account_id, user_id=user_id),
    )
    deliver(mailbox_user, "first")
    assert SyncEngine(db=db).sync_account(account_id).new_messages == 1
    with session_scope(db) as session:
        cursors = {f.role: f.highest_uid for f in session.exec(select(FolderState)).all()}

    run(db, lambda s: admin.deactivate_account(session=s, tenant_id=tenant_id, account_id=account_id))
    with session_scope(db) as session:
        assert admin.accounts_visible_to(session=session, tenant_id=tenant_id, user_id=user_id) == []
        account = session.get_one(MailAccount, account_id)
        assert account.deactivated_at is not None
    deliver(mailbox_user, "second, while deactivated")
    skipped = SyncEngine(db=db).sync_account(account_id)
    assert (skipped.status, skipped.skip_reason) == ("skipped", "account is deactivated")

    run(db, lambda s: admin.reactivate_account(session=s, tenant_id=tenant_id, account_id=account_id))
    with session_scope(db) as session:
        assert [
            a.id for a in admin.accounts_visible_to(session=session, tenant_id=tenant_id, user_id=user_id)
        ] == [account_id]
        assert {f.role: f.highest_uid for f in session.exec(select(FolderState)).all()} == cursors
        assert session.get_one(MailAccount, account_id).deactivated_at is None
    resumed = SyncEngine(db=db).sync_account(account_id)
    assert (resumed.status, resumed.new_messages) == ("ok", 1)  # only the new one


def test_delete_refused_while_a_user_has_access(db: Engine) -> None:
    tenant_id = make_tenant(db)
    account_id = add_offline(db, tenant_id, "shared@acme.test")
    user_id = make_user(db, tenant_id, "bob@acme.test")
    run(
        db,
        lambda s: admin.grant_access(session=s, tenant_id=tenant_id, account_id=account_id, user_id=user_id),
    )
    with pytest.raises(Refused) as refused:
        run(db, lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=account_id))
    message = str(refused.value)
    assert "cannot be deleted: 1 user(s) have access to it (bob@acme.test)" in message
    assert "Deactivate it instead (crm-inbox account deactivate)" in message
    run(
        db,
        lambda s: admin.revoke_access(session=s, tenant_id=tenant_id, account_id=account_id, user_id=user_id),
    )
    run(db, lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=account_id))
    with session_scope(db) as session:
        assert session.get(MailAccount, account_id) is None


def test_delete_refused_once_mail_was_processed(db: Engine, mailbox_user: MailboxUser) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user)
    deliver(mailbox_user, "hello")
    assert SyncEngine(db=db).sync_account(account_id).new_messages == 1
    with pytest.raises(Refused) as refused:
        run(db, lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=account_id))
    assert "mail of this account has already been processed" in str(refused.value)
    assert "Deactivate it instead" in str(refused.value)
    with session_scope(db) as session:
        assert session.get_one(MailAccount, account_id).processed_any


def test_delete_removes_sync_bookkeeping_and_signatures(db: Engine, mailbox_user: MailboxUser) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user)
    assert SyncEngine(db=db).sync_account(account_id).status == "ok"  # empty mailbox: nothing processed
    with session_scope(db) as session:
        folder = session.exec(select(FolderState).where(FolderState.account_id == account_id)).first()
        assert folder is not None and folder.id is not None
        session.add(
            FetchFailure(account_id=account_id, folder_id=folder.id, uidvalidity=1, uid=9, attempts=1)
        )
        tenant = session.get_one(Tenant, tenant_id)
        tenant.bcc_account_id = account_id
        session.add(tenant)
    run(
        db,
        lambda s: admin.add_signature(
            session=s, tenant_id=tenant_id, account_id=account_id, name="Short", html="<p>Hi</p>"
        ),
    )
    user_id = make_user(db, tenant_id, "eve@acme.test")
    with session_scope(db) as session:
        session.get_one(User, user_id).default_account_id = account_id

    run(db, lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=account_id))
    with session_scope(db) as session:
        for table in (FolderState, SyncRun, FetchFailure, Signature):
            rows = session.exec(select(table).where(col(table.account_id) == account_id)).all()
            assert rows == [], table.__name__
        assert session.get(MailAccount, account_id) is None
        assert session.get_one(Tenant, tenant_id).bcc_account_id is None
        assert session.get_one(User, user_id).default_account_id is None
    with pytest.raises(NotFound):
        run(db, lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=account_id))


# ---------------------------------------------------------------------------------------------
# 4. access


def test_access_grant_revoke_and_default_account(db: Engine) -> None:
    tenant_id = make_tenant(db)
    shared = add_offline(db, tenant_id, "sales@acme.test")
    personal = add_offline(db, tenant_id, "ann@acme.test")
    ann = make_user(db, tenant_id, "ann@acme.test")
    bob = make_user(db, tenant_id, "bob@acme.test")
    other_tenant = make_tenant(db, name="Other")
    stranger = make_user(db, other_tenant, "zed@other.test")

    with session_scope(db) as session:
        first = admin.grant_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=ann)
        assert (
            admin.grant_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=ann).id
            == first.id
        )  # idempotent
        admin.grant_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=bob)
        admin.grant_access(session=session, tenant_id=tenant_id, account_id=personal, user_id=ann)
        # A user of another tenant is not found in this one (it once was "belong to different tenants").
        with pytest.raises(NotFound, match=re.escape(f"No user with id {stranger}.")):
            admin.grant_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=stranger)
        with pytest.raises(NotFound, match=re.escape(f"No mail account with id {shared}.")):
            admin.grant_access(session=session, tenant_id=other_tenant, account_id=shared, user_id=stranger)
        assert [
            a.email for a in admin.accounts_visible_to(session=session, tenant_id=tenant_id, user_id=ann)
        ] == [
            "ann@acme.test",
            "sales@acme.test",
        ]
        with pytest.raises(Refused, match=re.escape("bob@acme.test: the user has no access to it")):
            admin.set_default_account(session=session, tenant_id=tenant_id, user_id=bob, account_id=personal)
        admin.set_default_account(session=session, tenant_id=tenant_id, user_id=ann, account_id=shared)
        assert admin.default_account(session=session, tenant_id=tenant_id, user_id=ann).id == shared  # type: ignore[union-attr]

    run(db, lambda s: admin.deactivate_account(session=s, tenant_id=tenant_id, account_id=personal))
    with session_scope(db) as session:
        with pytest.raises(Refused, match="it is deactivated"):
            admin.set_default_account(session=session, tenant_id=tenant_id, user_id=ann, account_id=personal)
        assert [
            a.id for a in admin.accounts_visible_to(session=session, tenant_id=tenant_id, user_id=ann)
        ] == [shared]

    # A default kept through a deactivation is unusable meanwhile and comes back with the account.
    run(db, lambda s: admin.deactivate_account(session=s, tenant_id=tenant_id, account_id=shared))
    with session_scope(db) as session:
        assert admin.default_account(session=session, tenant_id=tenant_id, user_id=ann) is None
    run(db, lambda s: admin.reactivate_account(session=s, tenant_id=tenant_id, account_id=shared))
    with session_scope(db) as session:
        assert admin.default_account(session=session, tenant_id=tenant_id, user_id=ann).id == shared  # type: ignore[union-attr]

        admin.revoke_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=ann)
        assert session.get_one(User, ann).default_account_id is None
        assert admin.default_account(session=session, tenant_id=tenant_id, user_id=ann) is None
        with pytest.raises(NotFound, match=re.escape("ann@acme.test has no access to account")):
            admin.revoke_access(session=session, tenant_id=tenant_id, account_id=shared, user_id=ann)
        assert admin.find_user(session=session, tenant_id=tenant_id, ref="BOB@acme.test").id == bob
        assert admin.find_user(session=session, tenant_id=tenant_id, ref=str(bob)).id == bob


# ---------------------------------------------------------------------------------------------
# 5./6. signatures, render, compose defaults


FORMAL = (
    '<p onclick="steal()"><b>{{ sender.full_name }}</b><br>{{ sender.job_title }}, {{ company.name }}<br>'
    "Tel. {{ sender.phone }}<br>{{ account.display_name }} &lt;{{ account.email }}&gt;</p>"
    "<script>alert(1)</script>"
)


@pytest.fixture
def team(db: Engine) -> tuple[int, int, int]:
    """(tenant, account, user): Acme GmbH with the sales mailbox and Ann, who has access."""
    tenant_id = make_tenant(db, name="Acme GmbH")
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    with session_scope(db) as session:
        session.get_one(MailAccount, account_id).display_name = "Acme Sales"
    user_id = make_user(
        db,
        tenant_id,
        "ann@acme.test",
        first_name="Ann",
        last_name="Lee",
        job_title="Head of Sales",
        phone="+49 30 1",
    )
    run(
        db,
        lambda s: admin.grant_access(session=s, tenant_id=tenant_id, account_id=account_id, user_id=user_id),
    )
    return tenant_id, account_id, user_id


def test_signature_is_sanitized_and_text_stored(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, _ = team
    saved = run(
        db,
        lambda s: admin.add_signature(
            session=s, tenant_id=tenant_id, account_id=account_id, name="Formal", html=FORMAL
        ),
    )
    assert isinstance(saved, admin.SignatureSaved) and saved.warnings == ()
    with session_scope(db) as session:
        stored = session.get_one(Signature, saved.signature.id)
    assert "<script" not in stored.html and "onclick" not in stored.html and "alert" not in stored.html
    assert "<b>{{ sender.full_name }}</b>" in stored.html
    assert stored.text.startswith("{{ sender.full_name }}\n{{ sender.job_title }}, {{ company.name }}")


def test_signature_limit_svg_and_unknown_tags(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, _ = team
    with session_scope(db) as session:
        with pytest.raises(admin.SignatureInvalid, match="Inline SVG graphics cannot be used"):
            admin.add_signature(
                session=session,
                tenant_id=tenant_id,
                account_id=account_id,
                name="Logo",
                html="<svg><rect/></svg>",
            )
        with pytest.raises(admin.SignatureInvalid) as unknown:
            admin.add_signature(
                session=session,
                tenant_id=tenant_id,
                account_id=account_id,
                name="X",
                html="{{ sender.nickname }}",
            )
        assert "unknown merge tag {{ sender.nickname }}" in str(unknown.value)
        for tag in KNOWN_TAGS:
            assert "{{ " + tag + " }}" in str(unknown.value)
        svg = admin.add_signature(
            session=session,
            tenant_id=tenant_id,
            account_id=account_id,
            name="Logo",
            html='<img src="https://acme.test/logo.svg" alt="">',
        )
        assert len(svg.warnings) == 1 and "SVG image" in svg.warnings[0]
        admin.add_signature(
            session=session,
            tenant_id=tenant_id,
            account_id=account_id,
            name="Short",
            html="<p>{{ sender.first_name }}</p>",
        )
        with pytest.raises(InvalidInput, match="already has a signature named 'Short'"):
            admin.add_signature(
                session=session, tenant_id=tenant_id, account_id=account_id, name="Short", html="<p>x</p>"
            )
        admin.add_signature(
            session=session, tenant_id=tenant_id, account_id=account_id, name="Formal", html=FORMAL
        )
        with pytest.raises(Refused) as fourth:
            admin.add_signature(
                session=session, tenant_id=tenant_id, account_id=account_id, name="Fourth", html="<p>4</p>"
            )
        assert "already has 3 signatures, the most an account can have" in str(fourth.value)
        assert "'Logo'" in str(fourth.value) and "Edit or delete one of them instead" in str(fourth.value)
        assert len(admin.list_signatures(session=session, tenant_id=tenant_id, account_id=account_id)) == 3


def test_update_and_delete_signature(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    with session_scope(db) as session:
        sig = admin.add_signature(
            session=session, tenant_id=tenant_id, account_id=account_id, name="Short", html="<p>A</p>"
        ).signature
        updated = admin.update_signature(
            session=session,
            tenant_id=tenant_id,
            signature_id=sig.id or 0,
            name="Brief",
            html="<p>{{ sender.first_name }}<script>x</script></p>",
        )
        assert (updated.signature.name, updated.signature.html) == ("Brief", "<p>{{ sender.first_name }}</p>")
        assert updated.signature.text == "{{ sender.first_name }}"
        with pytest.raises(admin.SignatureInvalid, match="unknown merge tag"):
            admin.update_signature(
                session=session, tenant_id=tenant_id, signature_id=sig.id or 0, html="{{ company.ceo }}"
            )
        admin.set_default_signature(
            session=session, tenant_id=tenant_id, user_id=user_id, account_id=account_id, signature_id=sig.id
        )
        admin.delete_signature(session=session, tenant_id=tenant_id, signature_id=sig.id or 0)
        access = session.exec(select(AccountAccess).where(AccountAccess.user_id == user_id)).one()
        assert access.default_signature_id is None
        with pytest.raises(NotFound):
            admin.delete_signature(session=session, tenant_id=tenant_id, signature_id=sig.id or 0)


def test_render_with_real_user_tenant_and_account(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    with session_scope(db) as session:
        sig = admin.add_signature(
            session=session, tenant_id=tenant_id, account_id=account_id, name="Formal", html=FORMAL
        ).signature
        session.get_one(User, user_id).last_name = "Lee <script>"  # merge values are escaped
        rendered = admin.render_signature(
            session=session, tenant_id=tenant_id, signature_id=sig.id or 0, user_id=user_id
        )
    assert "<b>Ann Lee &lt;script&gt;</b>" in rendered.html
    assert "Head of Sales, Acme GmbH" in rendered.html
    assert "Tel. +49 30 1" in rendered.html
    assert "Acme Sales &lt;sales@acme.test&gt;" in rendered.html
    assert rendered.text.splitlines()[:3] == ["Ann Lee <script>", "Head of Sales, Acme GmbH", "Tel. +49 30 1"]


def test_default_signature_rules_and_compose_defaults(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    other_account = add_offline(db, tenant_id, "support@acme.test")
    bob = make_user(db, tenant_id, "bob@acme.test")
    with session_scope(db) as session:
        formal = admin.add_signature(
            session=session, tenant_id=tenant_id, account_id=account_id, name="Formal", html=FORMAL
        ).signature
        short = admin.add_signature(
            session=session,
            tenant_id=tenant_id,
            account_id=account_id,
            name="Short",
            html="<p>{{ sender.first_name }}</p>",
        ).signature
        foreign = admin.add_signature(
            session=session, tenant_id=tenant_id, account_id=other_account, name="Support", html="<p>S</p>"
        )

        none_yet = admin.compose_defaults(
            session=session, tenant_id=tenant_id, user_id=user_id, account_id=account_id
        )
        assert (none_yet.signature, none_yet.rendered) == (None, None)
        assert [c.name for c in none_yet.others] == ["Formal", "Short"]

        with pytest.raises(InvalidInput) as not_its:
            admin.set_default_signature(
                session=session,
                tenant_id=tenant_id,
                user_id=user_id,
                account_id=account_id,
                signature_id=foreign.signature.id,
            )
        assert f"is not a signature of account {account_id}" in str(not_its.value)
        assert f"{formal.id} (Formal), {short.id} (Short)" in str(not_its.value)
        with pytest.raises(Refused, match=re.escape("bob@acme.test has no access")):
            admin.set_default_signature(
                session=session,
                tenant_id=tenant_id,
                user_id=bob,
                account_id=account_id,
                signature_id=short.id,
            )

        admin.set_default_signature(
            session=session,
            tenant_id=tenant_id,
            user_id=user_id,
            account_id=account_id,
            signature_id=short.id,
        )
        defaults = admin.compose_defaults(
            session=session, tenant_id=tenant_id, user_id=user_id, account_id=account_id
        )
        assert defaults.signature == admin.SignatureChoice(id=short.id or 0, name="Short")
        assert defaults.rendered is not None
        assert (defaults.rendered.html, defaults.rendered.text) == ("<p>Ann</p>", "Ann")
        assert defaults.others == (admin.SignatureChoice(id=formal.id or 0, name="Formal"),)

        with pytest.raises(
            Refused, match=re.escape("bob@acme.test cannot send from sales@acme.test: the user has no access")
        ):
            admin.compose_defaults(session=session, tenant_id=tenant_id, user_id=bob, account_id=account_id)
        admin.deactivate_account(session=session, tenant_id=tenant_id, account_id=account_id)
        with pytest.raises(Refused, match="it is deactivated"):
            admin.compose_defaults(
                session=session, tenant_id=tenant_id, user_id=user_id, account_id=account_id
            )


# ---------------------------------------------------------------------------------------------
# 7. tenant scoping: a record id of another tenant is not found


def test_records_of_another_tenant_are_not_found(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    signature_id = (
        run(
            db,
            lambda s: admin.add_signature(
                session=s, tenant_id=tenant_id, account_id=account_id, name="Short", html="<p>A</p>"
            ),
        )
    ).signature.id or 0  # type: ignore[attr-defined]
    other = make_tenant(db, name="Other")
    other_account = add_offline(db, other, "x@other.test")
    other_user = make_user(db, other, "zed@other.test")
    box = SecretBox.from_settings()

    cases: list[tuple[str, Callable[[Session], object]]] = [
        # an account of the other tenant, asked for in ours
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.deactivate_account(session=s, tenant_id=tenant_id, account_id=other_account),
        ),
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.delete_account(session=s, tenant_id=tenant_id, account_id=other_account),
        ),
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.connection_settings_of(
                session=s, tenant_id=tenant_id, account_id=other_account, box=box
            ),
        ),
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.list_signatures(session=s, tenant_id=tenant_id, account_id=other_account),
        ),
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.add_signature(
                session=s, tenant_id=tenant_id, account_id=other_account, name="X", html="<p>x</p>"
            ),
        ),
        (
            f"No mail account with id {other_account}.",
            lambda s: admin.grant_access(
                session=s, tenant_id=tenant_id, account_id=other_account, user_id=user_id
            ),
        ),
        # a user of the other tenant
        (
            f"No user with id {other_user}.",
            lambda s: admin.accounts_visible_to(session=s, tenant_id=tenant_id, user_id=other_user),
        ),
        (
            f"No user with id {other_user}.",
            lambda s: admin.default_account(session=s, tenant_id=tenant_id, user_id=other_user),
        ),
        (
            f"No user with id {other_user}.",
            lambda s: admin.find_user(session=s, tenant_id=tenant_id, ref=str(other_user)),
        ),
        (
            "No user with e-mail zed@other.test.",
            lambda s: admin.find_user(session=s, tenant_id=tenant_id, ref="zed@other.test"),
        ),
        # our signature and user, asked for from the other tenant
        (
            f"No signature with id {signature_id}.",
            lambda s: admin.update_signature(
                session=s, tenant_id=other, signature_id=signature_id, name="Stolen"
            ),
        ),
        (
            f"No signature with id {signature_id}.",
            lambda s: admin.delete_signature(session=s, tenant_id=other, signature_id=signature_id),
        ),
        (
            f"No signature with id {signature_id}.",
            lambda s: admin.render_signature(
                session=s, tenant_id=other, signature_id=signature_id, user_id=other_user
            ),
        ),
        (
            f"No user with id {user_id}.",
            lambda s: admin.compose_defaults(
                session=s, tenant_id=other, user_id=user_id, account_id=account_id
            ),
        ),
    ]
    for message, call in cases:
        with pytest.raises(NotFound, match=re.escape(message)):
            run(db, call)

    with session_scope(db) as session:  # nothing was changed by the refused calls
        assert session.get_one(MailAccount, other_account).active
        assert session.get_one(Signature, signature_id).name == "Short"
