"""Issue 12.9: a Message-ID reused by a different message (buggy mailers) is its own message,
flagged; a real copy of a stored message is still one message; re-keying after a UIDVALIDITY
change finds both again without storing anything twice. Real Dovecot, both databases."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.settings import Settings
from crm.models import ImapUid, Message
from devtools.samples import build_message
from sync.account_pass import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant

ORIGINAL = build_message(
    subject="Our offer",
    from_="sam@acme.test",
    to="buyer@globex.test",
    message_id="<offer-1@acme.test>",
    date=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    body="Please find our offer attached.\n",
)
# The customer's mailer answered with our colleague's Message-ID.
REPLY = build_message(
    subject="Re: Our offer",
    from_="buyer@globex.test",
    to="sam@acme.test",
    message_id="<offer-1@acme.test>",
    date=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
    body="We accept.\n",
)


def _stored(db: Engine) -> list[Message]:
    with Session(db) as session:
        return list(session.exec(select(Message).order_by(col(Message.id))).all())


@pytest.mark.parametrize("batch_size", [1, 200])
def test_reused_message_id_is_its_own_message(
    db: Engine, mailbox_user: MailboxUser, settings: Settings, batch_size: int
) -> None:
    box = mailbox_user
    box.dovecot.append(box.name, "Sent", ORIGINAL)
    box.dovecot.append_many(box.name, "INBOX", [ORIGINAL, REPLY])  # a copy to oneself, the reply
    account_id = make_account(db, make_tenant(db), box)
    engine = SyncEngine(db=db, settings=settings.model_copy(update={"sync_batch_size": batch_size}))
    first = engine.sync_account(account_id)
    assert first.status == "ok", first.errors
    assert first.new_messages == 2
    original, reply = sorted(_stored(db), key=lambda m: m.date or datetime.min.replace(tzinfo=UTC))
    assert original.message_id == "<offer-1@acme.test>" and not original.parse_errors
    assert reply.from_email == "buyer@globex.test" and reply.message_id != original.message_id
    assert any("Message-ID <offer-1@acme.test> is also used" in e for e in reply.parse_errors)

    box.dovecot.reset_uidvalidity(box.name, "INBOX")
    again = engine.sync_account(account_id)
    assert again.status == "ok", again.errors
    assert again.new_messages == 0
    assert len(_stored(db)) == 2
    with Session(db) as session:
        live = session.exec(select(ImapUid.uid, ImapUid.message_pk).order_by(col(ImapUid.id))).all()
    inbox_now = dict(live[-2:])
    assert inbox_now == {1: original.id, 2: reply.id}
