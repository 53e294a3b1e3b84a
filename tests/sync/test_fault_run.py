"""A repeatable fault run (issue 12, "Tests"): 30 connection cuts at random offsets of the
server's answers (seeded), then one clean pass; the counts of lost, duplicated and wrongly-read
messages are printed and must all be 0. Real Dovecot behind the fault proxy, both databases."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from core.settings import Settings
from core.types import Security
from crm.models import ImapUid, Message
from devtools.samples import build_message
from sync.account_pass import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant
from tests.sync.faultproxy import FaultProxy

CUTS = 30


@pytest.fixture
def proxy(mailbox_user: MailboxUser) -> Iterator[FaultProxy]:
    with FaultProxy(mailbox_user.dovecot.port) as running:
        yield running


def _order(i: int) -> bytes:
    return build_message(
        subject=f"Order {i}",
        from_=f"buyer{i % 7}@globex.test",
        to="sales@acme.test",
        message_id=f"<run{i}@globex.test>",
        date=datetime(2026, 2, 1, tzinfo=UTC) + timedelta(minutes=i),
        body=f"Line {i}\n" * (50 + 40 * (i % 5)),
    )


def test_thirty_random_cuts_lose_duplicate_and_read_nothing(
    db: Engine, mailbox_user: MailboxUser, proxy: FaultProxy, settings: Settings
) -> None:
    """Each round delivers three messages (and sends one reply), then cuts the pass at a random
    offset of what the server sends back; mail left over is picked up by later rounds."""
    box = mailbox_user
    account_id = make_account(
        db, make_tenant(db), box, security=Security.PLAIN, port=proxy.port, trust_ca=False
    )
    engine = SyncEngine(db=db, settings=settings.model_copy(update={"sync_batch_size": 2}))
    rng = random.Random(12)
    expected: set[str] = set()
    outcomes: dict[str, int] = {}
    for round_ in range(CUTS):
        orders = [_order(3 * round_ + k) for k in range(3)]
        reply = build_message(
            subject=f"Re: Order {3 * round_}",
            from_="sales@acme.test",
            to="buyer0@globex.test",
            message_id=f"<reply{round_}@acme.test>",
        )
        box.dovecot.append_many(box.name, "INBOX", orders)
        box.dovecot.append(box.name, "Sent", reply)
        expected |= {f"<run{3 * round_ + k}@globex.test>" for k in range(3)} | {f"<reply{round_}@acme.test>"}
        proxy.rules.cut_at_byte = rng.randrange(0, 2 * sum(len(m) for m in orders) + 3000)
        status = engine.sync_account(account_id, ignore_backoff=True).status
        outcomes[status] = outcomes.get(status, 0) + 1
    proxy.rules.cut_at_byte = None
    final = engine.sync_account(account_id, ignore_backoff=True)
    assert final.status == "ok", final.errors

    with Session(db) as session:
        stored = list(session.exec(select(Message.message_id)).all())
        locations = session.exec(select(func.count()).select_from(ImapUid)).one()
    lost = len(expected - set(stored))
    duplicated = len(stored) - len(set(stored))
    read = sum(
        "\\Seen" in flags
        for folder in ("INBOX", "Sent")
        for flags in box.dovecot.flags(box.name, folder).values()
    )
    print(f"\nfault run: {proxy.cuts} cuts {outcomes}; lost {lost}, duplicated {duplicated}, read {read}")
    assert proxy.cuts >= CUTS * 2 // 3  # most offsets fall inside the pass
    assert (lost, duplicated, read) == (0, 0, 0)
    assert locations == len(expected)
