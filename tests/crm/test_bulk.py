"""crm.bulk: the store's bulk INSERT writes exactly what SQLAlchemy's own insert writes (JSON,
enums, UTC dates, bytes, NULLs), on both backends, and falls back where it must."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Engine, insert, select

from core.db import session_scope
from core.types import Direction, UidState
from crm import bulk
from crm.models import ImapUid, Message, Thread
from tests.crm.test_store import _account

MESSAGE = Message.__table__  # type: ignore[attr-defined]
IMAP_UID = ImapUid.__table__  # type: ignore[attr-defined]
THREAD = Thread.__table__  # type: ignore[attr-defined]
CET = timezone(timedelta(hours=1))


def _message_row(tenant_id: int, message_id: str, n: int) -> dict[str, object]:
    return {
        "tenant_id": tenant_id,
        "message_id": message_id,
        "message_id_synthetic": n % 2 == 0,
        "content_hash": f"{n:064x}",
        "subject": f"Subject {n} é",
        "normalized_subject": f"subject {n}",
        "participants_key": "k" * 40,
        "date": datetime(2026, 3, 1, 10, n, tzinfo=CET) if n else None,
        "from_email": "a@globex.test",
        "from_name": "Ann 'A' \"Q\"",
        "to_addrs": [{"email": "b@acme.test", "name": "B%s"}],
        "cc_addrs": [],
        "bcc_addrs": [],
        "reply_to": [],
        "in_reply_to": None if n else "<p@x>",
        "references": ["<p@x>", "%(x)s"],
        "text_body": "line\n%s %% %(name)s\x01",
        "html_body": "",
        "attachments": [{"filename": "a.pdf", "size": 3, "inline": False, "content_id": None}],
        "headers": {"X-A": "1"},
        "attached_message_senders": [],
        "size": 100 + n,
        "recipient_count": 1,
        "direction": Direction.OUTBOUND if n % 2 else Direction.INBOUND,
        "thread_id": None,
        "malformed": n == 1,
        "parse_errors": ["bad"] if n == 1 else [],
        "raw": b"\x00raw\xff" if n == 1 else None,
        "headers_only": False,
        "attributed_user_id": None,
        "created_at": datetime(2026, 3, 1, tzinfo=UTC),
    }


def _stored(db: Engine, prefix: str) -> list[tuple[object, ...]]:
    with session_scope(db) as s:
        rows = s.connection().execute(
            select(MESSAGE).where(MESSAGE.c.message_id.like(f"{prefix}%")).order_by(MESSAGE.c.id)
        )
        return [tuple(v for k, v in row._mapping.items() if k not in ("id", "message_id")) for row in rows]


def test_insert_many_writes_what_core_insert_writes(db: Engine) -> None:
    tenant_id, _, _ = _account(db)
    with session_scope(db) as s:
        s.connection().execute(
            insert(MESSAGE), [_message_row(tenant_id, f"<core{n}@x>", n) for n in range(3)]
        )
        bulk.insert_many(
            s.connection(), MESSAGE, [_message_row(tenant_id, f"<bulk{n}@x>", n) for n in range(3)]
        )
    core, ours = _stored(db, "<core"), _stored(db, "<bulk")
    assert len(ours) == 3
    assert ours == core
    with session_scope(db) as s:
        dates = s.connection().execute(select(MESSAGE.c.date).where(MESSAGE.c.message_id == "<bulk1@x>"))
        assert dates.scalar_one() == datetime(2026, 3, 1, 9, 1, tzinfo=UTC)  # stored as UTC


def test_insert_many_fills_python_defaults_through_core(db: Engine) -> None:
    """`imap_uid` rows without `created_at` (a column with a Python-side default) still get it."""
    _, account_id, folder_id = _account(db)
    before = datetime.now(UTC)
    with session_scope(db) as s:
        bulk.insert_many(
            s.connection(),
            IMAP_UID,
            [
                {
                    "account_id": account_id,
                    "folder_id": folder_id,
                    "uidvalidity": 7,
                    "uid": uid,
                    "state": UidState.QUARANTINED,
                    "message_pk": None,
                    "skipped_pk": None,
                    "flags": ["\\Seen"],
                    "internal_date": None,
                }
                for uid in (1, 2)
            ],
        )
    with session_scope(db) as s:
        rows = s.connection().execute(
            select(IMAP_UID.c.uid, IMAP_UID.c.state, IMAP_UID.c.flags, IMAP_UID.c.created_at)
        )
        got = sorted(rows)
    assert [(uid, state, flags) for uid, state, flags, _ in got] == [
        (1, UidState.QUARANTINED, ["\\Seen"]),
        (2, UidState.QUARANTINED, ["\\Seen"]),
    ]
    assert all(created >= before - timedelta(seconds=5) for *_, created in got)


def test_select_rows_sees_pending_orm_changes(db: Engine) -> None:
    """The ORM's autoflush is kept: a thread added but not flushed is found."""
    tenant_id, _, _ = _account(db)
    with session_scope(db) as s:
        s.add(Thread(tenant_id=tenant_id, subject="pending"))
        rows = bulk.select_rows(s, select(THREAD.c.subject).where(THREAD.c.tenant_id == tenant_id))
        assert [subject for (subject,) in rows] == ["pending"]
        with s.no_autoflush:
            s.add(Thread(tenant_id=tenant_id, subject="held"))
            rows = bulk.select_rows(s, select(THREAD.c.subject).where(THREAD.c.tenant_id == tenant_id))
            assert [subject for (subject,) in rows] == ["pending"]
