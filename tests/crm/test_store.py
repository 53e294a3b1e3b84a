"""The mail store and the sync state on their own (SQLite and PostgreSQL): idempotent batches,
threading, worker leases, account health, the folder reset service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from pydantic_core import to_jsonable_python
from sqlalchemy import Engine
from sqlmodel import Session, select

from core import problems
from core.caller import Caller, Role
from core.db import session_scope
from core.errors import Forbidden, NotFound
from core.secrets import SecretBox
from core.types import AccountStatus, FolderRole, FolderSyncStatus, Security
from crm import mailboxes, mailstore, sync_state
from crm.models import FolderState, ImapUid, MailAccount, Message, Thread
from tests.factories import make_tenant

T0 = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)


def _account(db: Engine) -> tuple[int, int, int]:
    tenant_id = make_tenant(db)
    with session_scope(db) as s:
        account = mailboxes.add_account(
            session=s,
            caller=Caller.operator(tenant_id),
            data=mailboxes.AccountInput(
                email="s@acme.test",
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username="s",
            ),
            password=SecretStr("pw"),
            box=SecretBox.from_settings(),
        )
        folder = sync_state.folder_cursor(
            session=s, account_id=account.id or 0, role=FolderRole.INBOX, name="INBOX"
        )
        sync_state.begin_initial(session=s, folder_id=folder.folder_id, uidvalidity=7)
        return tenant_id, account.id or 0, folder.folder_id


def _mail(
    uid: int,
    mid: str,
    *,
    frm: str = "a@globex.test",
    to: str = "s@acme.test",
    subject: str = "Hello",
    refs: tuple[str, ...] = (),
    hours: float = 0,
) -> mailstore.NewMail:
    from sync.parse import normalize_subject

    return mailstore.NewMail(
        location=mailstore.Location(uid=uid),
        data=mailstore.MessageData(
            message_id=mid,
            content_hash=mid,
            subject=subject,
            normalized_subject=normalize_subject(subject),
            date=T0 + timedelta(hours=hours),
            from_email=frm,
            to=((to, ""),),
            references=refs,
            in_reply_to=refs[-1] if refs else None,
        ),
    )


def _apply(
    db: Engine, ids: tuple[int, int, int], items: list[mailstore.Incoming], cursor: int | None = None
) -> mailstore.BatchResult:
    tenant_id, account_id, folder_id = ids
    with session_scope(db) as s:
        return mailstore.apply_batch(
            session=s,
            tenant_id=tenant_id,
            account_id=account_id,
            folder_id=folder_id,
            folder_role=FolderRole.INBOX,
            uidvalidity=7,
            items=items,
            identities=frozenset({"s@acme.test"}),
            cursor=mailstore.CursorUpdate(cursor) if cursor else None,
        )


def _threads(db: Engine) -> dict[str, int]:
    with Session(db) as s:
        return {m.message_id: m.thread_id or 0 for m in s.exec(select(Message)).all()}


def test_batch_is_idempotent_and_moves_the_cursor(db: Engine) -> None:
    ids = _account(db)
    batch: list[mailstore.Incoming] = [
        _mail(1, "<a@x>"),
        _mail(2, "<b@x>", subject="Other", frm="b@initech.test"),
    ]
    first = _apply(db, ids, batch, cursor=2)
    again = _apply(db, ids, batch, cursor=2)
    assert (first.new_messages, first.new_locations) == (2, 2)
    assert (again.new_messages, again.new_locations) == (0, 0)
    with Session(db) as s:
        assert len(s.exec(select(ImapUid)).all()) == 2
        assert s.get_one(FolderState, ids[2]).highest_uid == 2
    # The cursor never goes backwards.
    _apply(db, ids, [], cursor=1)
    with Session(db) as s:
        assert s.get_one(FolderState, ids[2]).highest_uid == 2


def test_reply_before_parent_merges_threads(db: Engine) -> None:
    ids = _account(db)
    _apply(db, ids, [_mail(1, "<c@x>", subject="Re: Re: Deal", refs=("<b@x>",), hours=240)])
    _apply(db, ids, [_mail(2, "<a@x>", subject="Deal")])
    threads = _threads(db)
    assert threads["<a@x>"] != threads["<c@x>"]  # nothing links them yet (10 days apart)
    _apply(db, ids, [_mail(3, "<b@x>", subject="Re: Deal", refs=("<a@x>",), hours=1)])
    threads = _threads(db)
    assert threads["<a@x>"] == threads["<b@x>"] == threads["<c@x>"]
    with Session(db) as s:
        rows = s.exec(select(Thread)).all()
    assert len(rows) == 1 and rows[0].message_count == 3 and rows[0].subject == "Deal"
    assert rows[0].first_date == T0 and rows[0].last_date == T0 + timedelta(hours=240)


def test_subject_fallback_needs_same_participants_and_window(db: Engine) -> None:
    ids = _account(db)
    _apply(
        db,
        ids,
        [
            _mail(1, "<p1@x>", subject="Pricing"),
            # The customer's client dropped In-Reply-To: same people, same subject, next day.
            _mail(2, "<p2@x>", subject="RE: Pricing", frm="s@acme.test", to="a@globex.test", hours=20),
            # Someone else with the same subject: a different conversation.
            _mail(3, "<p3@x>", subject="Pricing", frm="z@umbrella.test"),
            # The same people a month later: a new conversation.
            _mail(4, "<p4@x>", subject="Pricing", hours=24 * 30),
        ],
    )
    threads = _threads(db)
    assert threads["<p1@x>"] == threads["<p2@x>"]
    assert len({threads["<p1@x>"], threads["<p3@x>"], threads["<p4@x>"]}) == 3


def test_only_one_worker_holds_an_account(db: Engine) -> None:
    _tenant, account_id, _folder = _account(db)
    with session_scope(db) as s:
        assert sync_state.claim_account(session=s, account_id=account_id, owner="w1", lease_seconds=60)
    with session_scope(db) as s:
        assert not sync_state.claim_account(session=s, account_id=account_id, owner="w2", lease_seconds=60)
        assert sync_state.claim_account(
            session=s, account_id=account_id, owner="w1", lease_seconds=60
        )  # renewal
    with session_scope(db) as s:
        sync_state.release_account(session=s, account_id=account_id, owner="w1")
    with session_scope(db) as s:
        assert sync_state.claim_account(session=s, account_id=account_id, owner="w2", lease_seconds=60)
    # An expired lease can be taken over.
    with session_scope(db) as s:
        assert sync_state.claim_account(session=s, account_id=account_id, owner="w2", lease_seconds=-1)
    with session_scope(db) as s:
        assert sync_state.claim_account(session=s, account_id=account_id, owner="w3", lease_seconds=60)


def test_overlong_from_address_is_flagged_not_fatal(db: Engine) -> None:
    ids = _account(db)
    result = _apply(db, ids, [_mail(1, "<long@x>", frm="a" * 400 + "@globex.test")])
    assert result.new_messages == 1
    with Session(db) as s:
        message = s.exec(select(Message)).one()
    assert message.from_email == "" and message.malformed
    assert any("longer than 320" in e for e in message.parse_errors)


def test_reset_folder_is_an_admin_service_scoped_to_the_tenant(db: Engine) -> None:
    tenant_id, account_id, folder_id = _account(db)
    with session_scope(db) as s:
        sync_state.flag_unstable(session=s, folder_id=folder_id)
    other_tenant = make_tenant(db, name="Other")
    with session_scope(db) as s:
        with pytest.raises(Forbidden) as forbidden:
            sync_state.reset_folder(
                session=s,
                caller=Caller(tenant_id, 1, Role.MEMBER),
                account_id=account_id,
                role=FolderRole.INBOX,
            )
        assert forbidden.value.code == "admin_required"
        with pytest.raises(NotFound) as elsewhere:
            sync_state.reset_folder(
                session=s, caller=Caller.operator(other_tenant), account_id=account_id, role=FolderRole.INBOX
            )
        assert elsewhere.value.code == "account_not_found"
        with pytest.raises(NotFound) as never_synced:
            sync_state.reset_folder(
                session=s, caller=Caller.operator(tenant_id), account_id=account_id, role=FolderRole.SENT
            )
        assert never_synced.value.code == "folder_not_found"
        done = sync_state.reset_folder(
            session=s, caller=Caller.operator(tenant_id), account_id=account_id, role=FolderRole.INBOX
        )
    assert (done.role, done.status) == (FolderRole.INBOX, FolderSyncStatus.OK)
    assert to_jsonable_python(done) == {
        "account_id": account_id,
        "role": "inbox",
        "name": "INBOX",
        "status": "ok",
    }
    with Session(db) as s:
        assert s.get_one(FolderState, folder_id).status is FolderSyncStatus.OK


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("auth_failed", AccountStatus.AUTH_FAILED),
        ("certificate_untrusted", AccountStatus.TLS_ERROR),
        ("host_blocked", AccountStatus.HOST_NOT_FOUND),
        ("connection_timed_out", AccountStatus.CONNECTION_FAILED),
        ("credentials_unreadable", AccountStatus.KEY_MISMATCH),
        ("sent_folder_missing", AccountStatus.FOLDER_MISSING),
        ("protocol_error", AccountStatus.ERROR),
    ],
)
def test_account_health_maps_codes_to_statuses(db: Engine, code: str, status: AccountStatus) -> None:
    _tenant, account_id, _folder = _account(db)
    with session_scope(db) as s:
        sync_state.record_account_failure(
            session=s, account_id=account_id, code=code, params={"host": "h"}, max_auth_failures=3
        )
    with Session(db) as s:
        account = s.get_one(MailAccount, account_id)
    assert (account.status, account.last_error_code, account.last_error_params) == (
        status,
        code,
        {"host": "h"},
    )
    assert account.consecutive_failures == 1 and account.next_attempt_at is not None


def test_folder_problems_keep_the_account_syncing(db: Engine) -> None:
    _tenant, account_id, _folder = _account(db)
    params: dict[str, object] = {"problems": [{"folder": None, "code": "sent_folder_missing", "params": {}}]}
    with session_scope(db) as s:
        sync_state.record_account_failure(
            session=s,
            account_id=account_id,
            code="folder_problems",
            params=params,
            max_auth_failures=3,
            retry_later=False,
        )
    with Session(db) as s:
        account = s.get_one(MailAccount, account_id)
    assert account.status is AccountStatus.FOLDER_MISSING and account.next_attempt_at is None
    assert "No Sent folder was found" in (
        problems.render(account.last_error_code, account.last_error_params) or ""
    )
