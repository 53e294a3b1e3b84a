"""Linking and reporting benchmark on SQLite: store+link rate, linking-only rate, targeted
backfill of one new contact, and the time of each report query.

    .venv/bin/python bench/linking_bench.py                                      # 20,000 / 10,000
    .venv/bin/python bench/linking_bench.py --messages 100000 --contacts 50000   # issue target

One run, one machine, fresh temporary SQLite files (migrated with `core.db.migrate`):

* CRM records: `--contacts` contacts (one address each), a company per five contacts (one domain
  each), a deal per ten contacts (one or two contacts, 80 % open), ten users owning the
  contacts. Bulk-inserted: the records are the setting, not what is measured.
* mail: `--messages` generated `MessageData` (threads with replies both ways, mail to/from
  contacts, unknown senders at customer domains, free mail, a few From the users), stored as a
  first sync would: INBOX then Sent, in batches of 200, one `crm.mailstore.apply_batch` and one
  transaction per batch. That threads, indexes addresses and links each batch.
* baseline (same run): a bare executemany INSERT of the very same message rows into another
  fresh database, same batches and transactions: no threading, no address index, no links.
* linking only: `link_service.link_messages` re-run over all stored mail, same batches (every
  decision recomputed; the links already exist, so nothing is written).
* backfill: `records.create_contact` for an address present in ~20 messages; the messages it
  re-decided must be exactly that address's mail.
* reports: each `crm.reports` query over all records of a kind, and for one record.
* import: a CSV of `--import-contacts` contacts (the synced senders without a contact first):
  the rows in one transaction, then `crm.backfill` linking their mail in chunks; the longest
  chunk is the longest a sync batch could wait for the tenant's lock on PostgreSQL (on SQLite,
  the single writer, a batch also waits for the import's row transaction).

Figures are printed and appended as a section to bench/RESULTS.md (unless --no-results).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, func, insert, select, text
from sqlmodel import col

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from core.caller import Caller  # noqa: E402
from core.db import make_engine, migrate, session_scope  # noqa: E402
from core.secrets import SecretBox  # noqa: E402
from core.settings import reset_settings  # noqa: E402
from core.types import FolderRole, Security  # noqa: E402
from crm import (  # noqa: E402
    backfill as backfill_jobs,
    contact_import,
    link_service,
    mailboxes,
    mailstore,
    records,
    reports,
    stored_mail,
    sync_state,
    tenants,
)
from crm.mailstore import Location, MessageData, NewMail  # noqa: E402
from crm.models import (  # noqa: E402
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealContact,
    Message,
    MessageLink,
)

BATCH = 200  # the sync engine's default batch size (settings.sync_batch_size)
USERS = 10
BACKFILL_TARGET = 20
START = datetime(2025, 6, 2, tzinfo=UTC)  # a Monday
SPAN = timedelta(days=330)
NEWBIE = "newbie@company7.com"


@dataclass(frozen=True, slots=True)
class World:
    tenant_id: int
    account_id: int
    user_ids: tuple[int, ...]
    contacts: int
    companies: int
    deals: int


# ---------------------------------------------------------------------------------------------
# Records


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def make_records(engine: Engine, contacts: int, rng: random.Random) -> World:
    """Tenant, account, users, then companies/contacts/deals bulk-inserted with explicit ids."""
    companies = max(1, contacts // 5)
    deals = max(1, contacts // 10)
    with session_scope(engine) as s:
        tenant = tenants.create_tenant(session=s, name="Bench", account_quota=5, own_domains=["acme.test"])
        tenant_id = tenant.id or 0
        account = mailboxes.add_account(
            session=s,
            caller=Caller.operator(tenant_id),
            data=mailboxes.AccountInput(
                email="sales@acme.test",
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username="sales",
            ),
            password=SecretStr("unused"),
            box=SecretBox.from_settings(),
        )
        operator = Caller.operator(tenant_id)
        user_ids = tuple(
            tenants.create_user(session=s, caller=operator, email=f"user{u}@acme.test").id
            for u in range(USERS)
        )
        s.execute(
            insert(Company),
            [{"id": j + 1, "tenant_id": tenant_id, "name": f"Company {j}"} for j in range(companies)],
        )
        s.execute(
            insert(CompanyDomain),
            [
                {"tenant_id": tenant_id, "company_id": j + 1, "domain": f"company{j}.com"}
                for j in range(companies)
            ],
        )
        s.execute(
            insert(Contact),
            [
                {
                    "id": i + 1,
                    "tenant_id": tenant_id,
                    "first_name": "Person",
                    "last_name": str(i),
                    "full_name": f"Person {i}",
                    "company_id": i % companies + 1,
                    "owner_user_id": rng.choice(user_ids) if rng.random() < 0.8 else None,
                    "source": "import",
                }
                for i in range(contacts)
            ],
        )
        s.execute(
            insert(ContactEmail),
            [
                {"tenant_id": tenant_id, "contact_id": i + 1, "email": contact_email(i, companies)}
                for i in range(contacts)
            ],
        )
        s.execute(
            insert(Deal),
            [
                {
                    "id": d + 1,
                    "tenant_id": tenant_id,
                    "title": f"Deal {d}",
                    "status": "open" if rng.random() < 0.8 else "won",
                }
                for d in range(deals)
            ],
        )
        pairs = set()
        for d in range(deals):
            for contact_index in rng.sample(range(contacts), k=min(contacts, rng.choice((1, 1, 2)))):
                pairs.add((d + 1, contact_index + 1))
        s.execute(insert(DealContact), [{"deal_id": d, "contact_id": c} for d, c in sorted(pairs)])
    return World(tenant_id, account.id or 0, user_ids, contacts, companies, deals)


def contact_email(i: int, companies: int) -> str:
    return f"person{i}@company{i % companies}.com"


# ---------------------------------------------------------------------------------------------
# Mail


@dataclass(frozen=True, slots=True)
class Generated:
    role: FolderRole
    data: MessageData


def generate_mail(messages: int, world: World, rng: random.Random) -> list[Generated]:
    """Chronological mail; about 30 % replies (flipping direction); NEWBIE in Cc of ~20."""
    out: list[Generated] = []
    recent: list[int] = []
    newbie_at = set(rng.sample(range(messages), k=min(BACKFILL_TARGET, messages)))
    step = SPAN / max(messages, 1)
    for k in range(messages):
        when = START + step * k + timedelta(seconds=rng.randint(0, 59))
        message_id = f"<bench{k}@gen.test>"
        parent: Generated | None = None
        if recent and rng.random() < 0.3:
            parent = out[rng.choice(recent)]
        if parent is not None:
            subject = (
                parent.data.subject
                if parent.data.subject.startswith("Re: ")
                else f"Re: {parent.data.subject}"
            )
            if parent.role is FolderRole.INBOX:
                role, sender, to = (
                    FolderRole.SENT,
                    f"user{rng.randrange(USERS)}@acme.test",
                    [parent.data.from_email],
                )
            else:
                role, sender, to = FolderRole.INBOX, parent.data.to[0][0], ["sales@acme.test"]
            references: tuple[str, ...] = (*parent.data.references, parent.data.message_id)
            in_reply_to: str | None = parent.data.message_id
        else:
            subject = f"Topic {k}"
            references, in_reply_to = (), None
            roll = rng.random()
            person = contact_email(rng.randrange(world.contacts), world.companies)
            if roll < 0.55:
                role, sender, to = FolderRole.INBOX, person, ["sales@acme.test"]
            elif roll < 0.65:  # unknown person at a customer: linked to the company by domain
                role, sender, to = (
                    FolderRole.INBOX,
                    f"someone{k}@company{rng.randrange(world.companies)}.com",
                    ["sales@acme.test"],
                )
            elif roll < 0.70:  # free mail nobody knows: no link
                role, sender, to = FolderRole.INBOX, f"stranger{k}@gmail.com", ["sales@acme.test"]
            else:
                extra = contact_email(rng.randrange(world.contacts), world.companies)
                role, sender = FolderRole.SENT, f"user{rng.randrange(USERS)}@acme.test"
                to = [person] if rng.random() < 0.7 else [person, extra]
        cc = ((NEWBIE, "New Bie"),) if k in newbie_at else ()
        data = MessageData(
            message_id=message_id,
            content_hash=hashlib.sha256(message_id.encode()).hexdigest(),
            subject=subject,
            normalized_subject=subject.removeprefix("Re: ").lower(),
            date=when,
            from_email=sender,
            to=tuple((address, "") for address in to),
            cc=cc,
            in_reply_to=in_reply_to,
            references=references[-10:],
            text_body=f"Hello,\n\nabout {subject}.\n\nRegards\n",
            size=600,
            recipient_count=len(to) + len(cc),
        )
        out.append(Generated(role, data))
        recent.append(k)
        if len(recent) > 2000:
            recent.pop(0)
    return out


def store_all(engine: Engine, world: World, mail: Sequence[Generated]) -> float:
    """INBOX then Sent, BATCH messages per apply_batch and per transaction. Returns seconds."""
    with session_scope(engine) as s:
        identities = mailstore.tenant_identities(session=s, tenant_id=world.tenant_id)
        folders = {
            role: sync_state.folder_cursor(
                session=s, account_id=world.account_id, role=role, name=role.value
            ).folder_id
            for role in (FolderRole.INBOX, FolderRole.SENT)
        }
    started = time.perf_counter()
    for role in (FolderRole.INBOX, FolderRole.SENT):
        items = [g.data for g in mail if g.role is role]
        for offset in range(0, len(items), BATCH):
            batch = [
                NewMail(Location(uid=offset + n + 1), d) for n, d in enumerate(items[offset : offset + BATCH])
            ]
            with session_scope(engine) as s:
                mailstore.apply_batch(
                    session=s,
                    tenant_id=world.tenant_id,
                    account_id=world.account_id,
                    folder_id=folders[role],
                    folder_role=role,
                    uidvalidity=1,
                    items=batch,
                    identities=identities,
                    cursor=mailstore.CursorUpdate(highest_uid=offset + len(batch)),
                )
    return time.perf_counter() - started


def bare_insert(engine: Engine, mail: Sequence[Generated]) -> float:
    """The same message rows as apply_batch writes (built by the store's own row builder), as a
    plain executemany INSERT per batch: the floor any store+link could reach."""
    with session_scope(engine) as s:
        tenant_id = tenants.create_tenant(session=s, name="Baseline", own_domains=["acme.test"]).id or 0
    identities = frozenset({"sales@acme.test", *(f"user{u}@acme.test" for u in range(USERS))})
    rows = [stored_mail.message_row(tenant_id, g.data, g.role, identities)[0] for g in mail]
    started = time.perf_counter()
    for chunk in _chunks(rows, BATCH):
        with session_scope(engine) as s:
            s.execute(insert(Message), list(chunk))
    return time.perf_counter() - started


def relink_all(engine: Engine, world: World) -> tuple[float, int]:
    with session_scope(engine) as s:
        pks = list(s.execute(select(col(Message.id)).order_by(col(Message.id))).scalars())
    started = time.perf_counter()
    for chunk in _chunks(pks, BATCH):
        with session_scope(engine) as s:
            link_service.link_messages(
                session=s, tenant_id=world.tenant_id, message_pks=list(chunk), account_id=world.account_id
            )
    return time.perf_counter() - started, len(pks)


def backfill(engine: Engine, world: World, mail: Sequence[Generated]) -> tuple[float, int, int, int]:
    """Seconds for create_contact(NEWBIE); messages it re-decided; links it got; generated truth."""
    truth = sum(1 for g in mail if NEWBIE in {a for a, _ in g.data.cc})
    with session_scope(engine) as s:
        touched = len(
            link_service.messages_with_addresses(session=s, tenant_id=world.tenant_id, emails=[NEWBIE])
        )
    started = time.perf_counter()
    with session_scope(engine) as s:
        contact = records.create_contact(
            session=s, caller=Caller.operator(world.tenant_id), emails=[NEWBIE], first_name="New"
        )
    seconds = time.perf_counter() - started
    with session_scope(engine) as s:
        linked = s.execute(
            select(func.count(col(MessageLink.id))).where(
                col(MessageLink.record_kind) == "contact", col(MessageLink.record_id) == contact.id
            )
        ).scalar_one()
    return seconds, touched, linked, truth


def import_and_backfill(engine: Engine, world: World, size: int) -> tuple[float, float, int, int, float]:
    """A CSV import of `size` contacts: the synced senders no contact has yet, padded with fresh
    addresses. Seconds for the rows (one transaction), seconds for the chunked backfill after it,
    chunks, messages linked, and the longest chunk (the longest the tenant lock was held)."""
    with engine.connect() as conn:
        unknown = list(
            conn.execute(
                text(
                    "SELECT DISTINCT email FROM message_address WHERE role = 'from' AND email NOT IN "
                    "(SELECT email FROM contact_email) AND email NOT IN (SELECT email FROM app_user) "
                    "ORDER BY email"
                )
            ).scalars()
        )[:size]
    emails = unknown + [f"imported{i}@import{i % 50}.example" for i in range(size - len(unknown))]
    data = ("Email,Name\n" + "\n".join(f"{e},Imported {i}" for i, e in enumerate(emails)) + "\n").encode()
    operator = Caller.operator(world.tenant_id)
    started = time.perf_counter()
    with session_scope(engine) as s:
        contact_import.import_contacts(session=s, caller=operator, data=data)
    rows_seconds = time.perf_counter() - started
    started = time.perf_counter()
    results = backfill_jobs.run_pending(engine=engine, caller=operator)
    backfill_seconds = time.perf_counter() - started
    return (
        rows_seconds,
        backfill_seconds,
        sum(r.chunks for r in results),
        sum(r.messages_linked for r in results),
        max((r.longest_chunk_seconds for r in results), default=0.0),
    )


def _busiest(engine: Engine, by: reports.ReportBy) -> int:
    """The record of this kind with the most mail: the "one record" case at its heaviest."""
    with engine.connect() as conn:
        return conn.execute(
            select(col(MessageLink.record_id))
            .where(col(MessageLink.record_kind) == by.value)
            .group_by(col(MessageLink.record_id))
            .order_by(func.count().desc())
            .limit(1)
        ).scalar_one()


def time_reports(engine: Engine, world: World) -> list[tuple[str, float, int]]:
    """(name, seconds, rows) of each report query, over all records and for one record."""
    out: list[tuple[str, float, int]] = []
    one: dict[reports.ReportBy, int] = {
        by: _busiest(engine, by) for by in reports.ReportBy if by is not reports.ReportBy.USER
    }
    one[reports.ReportBy.USER] = world.user_ids[0]
    queries: list[tuple[str, Callable[..., list[Any]], dict[str, Any]]] = [
        ("activity day", reports.activity, {}),
        ("activity week", reports.activity, {"period": reports.Period.WEEK}),
        ("last contact", reports.last_contact, {}),
        ("first response", reports.first_response, {}),
        ("unanswered", reports.unanswered, {}),
    ]
    for by in reports.ReportBy:
        for name, fn, kwargs in queries:
            for scope, record_id in (("all", None), ("one", one[by])):
                with session_scope(engine) as s:
                    started = time.perf_counter()
                    rows = fn(
                        session=s,
                        caller=Caller.operator(world.tenant_id),
                        by=by,
                        record_id=record_id,
                        **kwargs,
                    )
                    seconds = time.perf_counter() - started
                out.append((f"{name} by {by.value} ({scope})", seconds, len(rows)))
    return out


# ---------------------------------------------------------------------------------------------


def fresh_engine(directory: Path, name: str) -> Engine:
    engine = make_engine(f"sqlite:///{directory / name}")
    migrate(engine)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--import-contacts", type=int, default=10_000, help="size of the CSV import measured")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="crm-linking-bench-") as tmp:
        directory = Path(tmp)
        os.environ["CRM_INBOX_DATA_DIR"] = str(directory / "data")
        os.environ.setdefault("CRM_INBOX_SECRET_KEY", Fernet.generate_key().decode())
        reset_settings()
        rng = random.Random(args.seed)
        total_started = time.perf_counter()

        engine = fresh_engine(directory, "bench.db")
        world = make_records(engine, args.contacts, rng)
        mail = generate_mail(args.messages, world, rng)

        baseline_engine = fresh_engine(directory, "baseline.db")
        insert_seconds = bare_insert(baseline_engine, mail)
        baseline_engine.dispose()

        store_seconds = store_all(engine, world, mail)
        with engine.connect() as conn:
            links = conn.execute(text("SELECT count(*) FROM message_link")).scalar_one()
            threads = conn.execute(text("SELECT count(*) FROM thread")).scalar_one()
        relink_seconds, relinked = relink_all(engine, world)
        backfill_seconds, touched, linked, truth = backfill(engine, world, mail)
        report_times = time_reports(engine, world)
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
        analyzed = time_reports(engine, world)
        imported = import_and_backfill(engine, world, args.import_contacts)
        engine.dispose()
        total = time.perf_counter() - total_started

    n = len(mail)
    rows: list[tuple[str, str]] = [
        (
            "data set",
            f"{n} messages ({threads} threads, {links} links); {world.contacts} contacts, "
            f"{world.companies} companies, {world.deals} deals, {USERS} users",
        ),
        (
            "bare INSERT of the message rows (baseline)",
            f"{insert_seconds:.1f} s, {n / insert_seconds:,.0f} msg/s",
        ),
        (
            "apply_batch: store + thread + index + link",
            f"{store_seconds:.1f} s, {n / store_seconds:,.0f} msg/s",
        ),
        ("ratio store+link / bare INSERT", f"{insert_seconds / store_seconds:.2f}"),
        (
            "link_messages only (re-run on stored mail)",
            f"{relink_seconds:.1f} s, {relinked / relink_seconds:,.0f} msg/s",
        ),
        (
            f"backfill: create_contact({NEWBIE})",
            f"{backfill_seconds * 1000:.0f} ms; touched {touched} messages, linked {linked}, "
            f"generated with the address {truth}" + ("" if touched == linked == truth else "  MISMATCH"),
        ),
    ]
    rows.append(
        (
            f"CSV import of {args.import_contacts} contacts",
            f"rows {imported[0]:.1f} s (one transaction without the tenant lock); then backfill "
            f"{imported[1]:.1f} s in {imported[2]} chunks, {imported[3]} messages linked, "
            f"longest chunk {imported[4] * 1000:.0f} ms",
        )
    )
    for (name, seconds, count), (_, after, _) in zip(report_times, analyzed, strict=True):
        rows.append(
            (f"report {name}", f"{seconds * 1000:.0f} ms ({after * 1000:.0f} ms after ANALYZE), {count} rows")
        )
    rows.append(("whole run", f"{total:.0f} s"))

    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if touched != linked or linked != truth:
        print("\nbackfill mismatch: the new contact's links differ from its mail", file=sys.stderr)
    if not args.no_results:
        results = ROOT / "bench" / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n\nEach section is appended by a benchmark run.\n")
        with results.open("a") as handle:
            handle.write(
                f"\n## Linking and reports ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
                f"`bench/linking_bench.py --messages {args.messages} --contacts {args.contacts}`)\n\n"
            )
            handle.write(
                f"Machine: {os.cpu_count()} cores; SQLite file (WAL) in a temp directory; "
                f"batches of {BATCH}, one transaction each.\n\n"
            )
            handle.write("| measure | result |\n| --- | --- |\n")
            for key, value in rows:
                handle.write(f"| {key} | {value} |\n")
    if touched != linked or linked != truth:
        sys.exit(1)


if __name__ == "__main__":
    main()
