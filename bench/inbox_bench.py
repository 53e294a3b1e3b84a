"""The shared inbox at size: a generated tenant (by default 1,000,000 messages in 300,000
conversations, 20 accounts, 50 users), then the reads a team does all day, through the services
the API calls, timed as p50/p95 over repeated calls with varying arguments.

Baseline, measured in the same run on the same database: the bare indexed read underneath each
view (`SELECT ... FROM thread WHERE tenant_id=? ORDER BY last_date DESC LIMIT 50`), so the cost of
visibility, filters and views is what the ratio shows.

    .venv/bin/python -m bench.inbox_bench --messages 1000000 --db sqlite
    .venv/bin/python -m bench.inbox_bench --messages 1000000 --db postgres

Targets (issue 8): any view p95 < 50 ms, full-text search p95 < 200 ms, a record timeline p95 <
50 ms, view counts < 100 ms.

The mail's words follow Zipf's law over a vocabulary of 50,000 (searches draw two words the same
way, skipping the 30 most frequent), one conversation in 8 is linked to one of 3,000 deals in 6
stages (the per-stage views), and each user has read one conversation in 50 (unread counts).
`--keep` leaves the database in place to study query plans.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, distinct, func, insert, text
from sqlmodel import Session, col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.caller import Caller, Role  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.types import ConversationStatus, Direction, FolderRole, Security, UidState  # noqa: E402
from crm import access, inbox_counts, inbox_views, timelines  # noqa: E402
from crm.inbox_views import Assignee, ThreadFilter  # noqa: E402
from crm.models import (  # noqa: E402
    AccountAccess,
    Contact,
    ContactEmail,
    Deal,
    FolderState,
    ImapUid,
    MailAccount,
    Message,
    MessageLink,
    Tenant,
    Thread,
    ThreadDeal,
    ThreadRead,
    User,
)
from crm.rules.linking import LinkReason, RecordKind  # noqa: E402

# Business words first, then made-up words: mail text follows Zipf's law over a large vocabulary
# (a word's frequency ~ 1/rank), so a search term matches anything from most messages to a handful,
# as in real mail. Search terms skip the SEARCH_SKIP most frequent words (the "the, and, of" no one
# searches for) and are drawn by the same law from the rest.
BUSINESS = [
    "quote", "invoice", "order", "delivery", "contract", "renewal", "price", "discount", "meeting",
    "call", "schedule", "proposal", "shipment", "payment", "reminder", "offer", "demo", "trial",
    "license", "support", "upgrade", "budget", "approval", "signature", "pallet", "warehouse",
    "freight", "customs", "credit", "terms", "volume", "rebate", "forecast", "launch", "sample",
]  # fmt: skip
VOCABULARY = 50_000
SEARCH_SKIP = 30
ZIPF_S = 1.0
STAGES = ["lead", "qualified", "proposal", "negotiation", "won", "lost"]
DEALS = 3_000
DEAL_EVERY = 8  # one conversation in 8 is linked to a deal
READ_EVERY = 50
# Rows per transaction. Small, as the sync's batches are (200 by default): the sidebar's tallies
# are a few rows updated by triggers, and PostgreSQL walks a longer chain of row versions each time
# one row is updated again in the same transaction (20,000 per transaction made loading quadratic).
CHUNK = 2_000


def vocabulary(rng: random.Random) -> list[str]:
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["ion", "er", "an", "or"]
    words = list(BUSINESS)
    seen = set(words)
    while len(words) < VOCABULARY:
        word = "".join(rng.choice(syllables) for _ in range(rng.choice((2, 3, 3, 4))))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_weights(n: int) -> list[float]:
    total, cumulative = 0.0, []
    for rank in range(1, n + 1):
        total += 1.0 / rank**ZIPF_S
        cumulative.append(total)
    return cumulative


COMPANIES = [
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "wonka",
    "acmecorp",
    "stark",
    "wayne",
    "tyrell",
]
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ACCOUNTS = 20
# JSON columns have Python-side defaults only, which a bulk INSERT does not apply.
EMPTY_JSON: dict[str, Any] = {
    "cc_addrs": [],
    "bcc_addrs": [],
    "reply_to": [],
    "references": [],
    "headers": {},
    "attached_message_senders": [],
    "parse_errors": [],
}
USERS = 50
VOCABULARY_SEED = 11  # its own seed: a reused database's words are known without replaying
CONTACTS = 20_000


def _engine(kind: str) -> tuple[Engine, Callable[[], None]]:
    if kind == "sqlite":
        folder = tempfile.mkdtemp(prefix="inbox-bench-")
        engine = make_engine(f"sqlite:///{folder}/bench.db")

        def remove() -> None:
            engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)

        return engine, remove
    admin_url = os.environ.get("CRM_INBOX_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"crm_inbox_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin_url.rsplit("/", 1)[0] + f"/{name}")

    def drop() -> None:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return engine, drop


def generate(engine: Engine, messages: int, threads: int, rng: random.Random) -> dict[str, Any]:
    """Bulk rows with explicit ids, in chunks: the setting, not what is measured."""
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            insert(Tenant), [{"id": 1, "name": "Bench", "account_quota": 100, "own_domains": ["acme.test"]}]
        )
        conn.execute(
            insert(User),
            [
                {
                    "id": u,
                    "tenant_id": 1,
                    "email": f"user{u}@acme.test",
                    "first_name": f"User{u}",
                    "is_admin": u == 1,
                }
                for u in range(1, USERS + 1)
            ],
        )
        conn.execute(
            insert(MailAccount),
            [
                {
                    "id": a,
                    "tenant_id": 1,
                    "email": f"box{a}@acme.test",
                    "imap_host": "imap.acme.test",
                    "imap_port": 993,
                    "imap_security": Security.TLS,
                    "username": f"box{a}",
                    "secret_encrypted": "x",
                }
                for a in range(1, ACCOUNTS + 1)
            ],
        )
        conn.execute(
            insert(FolderState),
            [
                {"id": a, "account_id": a, "role": FolderRole.INBOX, "name": "INBOX"}
                for a in range(1, ACCOUNTS + 1)
            ],
        )
        grants = []
        for u in range(2, USERS + 1):
            for a in rng.sample(range(1, ACCOUNTS + 1), rng.randint(2, 4)):
                grants.append({"user_id": u, "account_id": a})
        conn.execute(insert(AccountAccess), grants)
        conn.execute(
            insert(Contact),
            [
                {"id": c, "tenant_id": 1, "full_name": f"Contact {c}", "source": "manual"}
                for c in range(1, CONTACTS + 1)
            ],
        )
        conn.execute(
            insert(ContactEmail),
            [
                {"tenant_id": 1, "contact_id": c, "email": f"c{c}@{COMPANIES[c % len(COMPANIES)]}.test"}
                for c in range(1, CONTACTS + 1)
            ],
        )
    words_list = vocabulary(random.Random(VOCABULARY_SEED))
    cumulative = zipf_weights(len(words_list))
    with engine.begin() as conn:
        conn.execute(
            insert(Deal),
            [
                {"id": d, "tenant_id": 1, "title": f"Deal {d}", "stage": STAGES[d % len(STAGES)]}
                for d in range(1, DEALS + 1)
            ],
        )
    thread_account = [0] + [rng.randint(1, ACCOUNTS) for _ in range(threads)]
    thread_contact = [0] + [rng.randint(1, CONTACTS) for _ in range(threads)]
    per_thread = [0] * (threads + 1)
    owner = [0] * (messages + 1)
    inbound = [True] * (messages + 1)
    last = [T0] * (threads + 1)
    last_in = [True] * (threads + 1)
    for m in range(1, messages + 1):
        t = m if m <= threads else rng.randint(1, threads)
        owner[m] = t
        per_thread[t] += 1
        inbound[m] = rng.random() < 0.6
        when = T0 + timedelta(minutes=m // 2)
        if when >= last[t]:  # as the store keeps it: the newest message's date and direction
            last[t], last_in[t] = when, inbound[m]
    chunk = CHUNK
    for start in range(1, messages + 1, chunk):
        rows, uids, links = [], [], []
        for m in range(start, min(messages, start + chunk - 1) + 1):
            t = owner[m]
            when = T0 + timedelta(minutes=m // 2)
            contact = thread_contact[t]
            sender = (
                f"c{contact}@{COMPANIES[contact % len(COMPANIES)]}.test" if inbound[m] else "box@acme.test"
            )
            words = " ".join(rng.choices(words_list, cum_weights=cumulative, k=30))
            rows.append(
                {
                    "id": m,
                    "tenant_id": 1,
                    "message_id": f"<m{m}@bench.test>",
                    "content_hash": f"h{m}",
                    "subject": f"{rng.choices(words_list, cum_weights=cumulative)[0].title()} {t}",
                    "normalized_subject": f"subject {t}",
                    "date": when,
                    "from_email": sender,
                    "from_name": f"Contact {contact}",
                    "to_addrs": [{"email": "box@acme.test", "name": ""}],
                    "text_body": f"Hello, about the {words}.",
                    "direction": Direction.INBOUND if inbound[m] else Direction.OUTBOUND,
                    "thread_id": t,
                    "attachments": [],
                    **EMPTY_JSON,
                }
            )
            uids.append(
                {
                    "account_id": thread_account[t],
                    "folder_id": thread_account[t],
                    "uidvalidity": 1,
                    "uid": m,
                    "state": UidState.STORED,
                    "message_pk": m,
                    "flags": [],
                }
            )
            links.append(
                {
                    "tenant_id": 1,
                    "message_pk": m,
                    "record_kind": RecordKind.CONTACT,
                    "record_id": contact,
                    "reason": LinkReason.ADDRESS,
                }
            )
            if t % DEAL_EVERY == 0:
                links.append(
                    {
                        "tenant_id": 1,
                        "message_pk": m,
                        "record_kind": RecordKind.DEAL,
                        "record_id": (t // DEAL_EVERY) % DEALS + 1,
                        "reason": LinkReason.MANUAL,
                    }
                )
        if start == 1:
            _threads(engine, threads, per_thread, last, last_in, rng)
        with engine.begin() as conn:
            conn.execute(insert(Message), rows)
            conn.execute(insert(ImapUid), uids)
            conn.execute(insert(MessageLink), links)
        if start // chunk % 25 == 1:  # statistics as autovacuum keeps them on a live system
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        print(f"  generated {min(messages, start + chunk - 1):,} messages", end="\r", flush=True)
    # Read marks: each user has read one conversation in READ_EVERY (the unread count starts from
    # a user's own marks), some of them before newer mail came.
    with engine.begin() as conn:
        for u in range(1, USERS + 1):
            read = rng.sample(range(1, threads + 1), max(1, threads // READ_EVERY))
            conn.execute(
                insert(ThreadRead),
                [
                    {"user_id": u, "thread_id": t, "read_at": last[t] + timedelta(minutes=m)}
                    for t, m in zip(read, rng.choices((-5, 5), k=len(read)), strict=True)
                ],
            )
    if engine.dialect.name == "postgresql":
        # As autovacuum leaves a live database: statistics, and a visibility map that lets
        # index-only scans skip the heap (without it every one read the rows again).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE)"))
    else:
        with engine.begin() as conn:
            conn.execute(text("ANALYZE"))
    took = time.perf_counter() - started
    print(f"  generated {messages:,} messages in {threads:,} conversations in {took:.0f} s")
    return {"thread_contact": thread_contact, "words": words_list, "cumulative": cumulative}


def _threads(
    engine: Engine,
    threads: int,
    per_thread: list[int],
    last: list[datetime],
    last_in: list[bool],
    rng: random.Random,
) -> None:
    statuses = [ConversationStatus.OPEN] * 6 + [ConversationStatus.CLOSED] * 3 + [ConversationStatus.PENDING]
    rows = []
    for t in range(1, threads + 1):
        snoozed = rng.random() < 0.03
        rows.append(
            {
                "id": t,
                "tenant_id": 1,
                "subject": f"Subject {t}",
                "normalized_subject": f"subject {t}",
                "first_date": T0,
                "last_date": last[t],
                "last_direction": Direction.INBOUND if last_in[t] else Direction.OUTBOUND,
                "message_count": max(1, per_thread[t]),
                "status": ConversationStatus.SNOOZED if snoozed else rng.choice(statuses),
                "snoozed_until": datetime(2099, 1, 1, tzinfo=UTC) if snoozed else None,
                "assignee_user_id": rng.randint(1, USERS) if rng.random() < 0.5 else None,
            }
        )
        if len(rows) == CHUNK:
            with engine.begin() as conn:
                conn.execute(insert(Thread), rows)
            rows = []
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(Thread), rows)


def timed(fn: Callable[[int], object], runs: int) -> tuple[float, float]:
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def measure(
    engine: Engine, info: dict[str, Any], runs: int, rng: random.Random
) -> list[tuple[str, float, float, str]]:
    admin = Caller(1, 1, Role.ADMIN)
    members = [Caller(1, u, Role.MEMBER) for u in range(2, USERS + 1)]
    results = []

    def session_call(fn: Callable[[Session, int], object]) -> Callable[[int], object]:
        def run(i: int) -> object:
            with Session(engine) as s:
                return fn(s, i)

        return run

    base = session_call(
        lambda s, i: s.execute(
            text("SELECT id FROM thread WHERE tenant_id = 1 ORDER BY last_date DESC, id DESC LIMIT 50")
        ).all()
    )
    p50, p95 = timed(base, runs)
    results.append(("baseline: bare indexed thread list", p50, p95, "-"))
    views: list[tuple[str, ThreadFilter]] = [
        ("All open", ThreadFilter(status=ConversationStatus.OPEN)),
        ("Mine", ThreadFilter(status=ConversationStatus.OPEN, assignee=Assignee.ME)),
        ("Unassigned", ThreadFilter(status=ConversationStatus.OPEN, assignee=Assignee.UNASSIGNED)),
        ("Snoozed", ThreadFilter(status=ConversationStatus.SNOOZED)),
        ("Closed", ThreadFilter(status=ConversationStatus.CLOSED)),
        ("Unread", ThreadFilter(status=ConversationStatus.OPEN, unread=True)),
        ("Waiting for reply", ThreadFilter(waiting=True)),
        ("One account", ThreadFilter(account_id=3)),
        ("Deal stage", ThreadFilter(status=ConversationStatus.OPEN, deal_stage="proposal")),
    ]
    groups: list[tuple[str, list[Caller]]] = [("admin", [admin]), ("member", members)]
    for who, callers in groups:
        for label, filters in views:
            if label == "One account" and who == "member":
                continue

            def view(s: Session, i: int, f: ThreadFilter = filters, cs: list[Caller] = callers) -> object:
                return inbox_views.list_threads(session=s, caller=cs[i % len(cs)], filters=f)

            p50, p95 = timed(session_call(view), runs)
            results.append((f"view {label} ({who})", p50, p95, "< 50"))

    # Same-run reference for the Deal stage view: the stage's conversations gathered from the
    # conversation-deal pairs joined to deals, as before thread_stage (0026).
    def stage_from_pairs(session: Session, caller: Caller, stage: str) -> Any:
        return col(Thread.id).in_(
            select(col(ThreadDeal.thread_id))
            .join(Deal, col(Deal.id) == col(ThreadDeal.deal_id))
            .where(
                inbox_views.deal_links_visible(session, caller),
                col(Deal.tenant_id) == caller.tenant_id,
                col(Deal.stage) == stage,
            )
        )

    current = inbox_views._in_deal_stage
    inbox_views._in_deal_stage = stage_from_pairs
    try:
        for who, callers in groups:

            def pairs_view(s: Session, i: int, cs: list[Caller] = callers) -> object:
                return inbox_views.list_threads(
                    session=s,
                    caller=cs[i % len(cs)],
                    filters=ThreadFilter(status=ConversationStatus.OPEN, deal_stage="proposal"),
                )

            p50, p95 = timed(session_call(pairs_view), runs)
            results.append(
                (f"  reference: view Deal stage from the pairs, before 0026 ({who})", p50, p95, "-")
            )
    finally:
        inbox_views._in_deal_stage = current
    searchable = info["words"][SEARCH_SKIP:]
    search_weights = zipf_weights(len(searchable))
    for who, callers in groups:

        def search(s: Session, i: int, cs: list[Caller] = callers) -> object:
            words = " ".join(rng.choices(searchable, cum_weights=search_weights, k=2))
            return inbox_views.list_threads(
                session=s, caller=cs[i % len(cs)], filters=ThreadFilter(text=words)
            )

        def timeline(s: Session, i: int, cs: list[Caller] = callers) -> object:
            return timelines.timeline(
                session=s, caller=cs[i % len(cs)], kind=RecordKind.CONTACT, record_id=rng.randint(1, CONTACTS)
            )

        def counts(s: Session, i: int, cs: list[Caller] = callers) -> object:
            return inbox_counts.view_counts(session=s, caller=cs[i % len(cs)])

        p50, p95 = timed(session_call(search), runs)
        results.append((f"full-text search, two words ({who})", p50, p95, "< 200"))
        p50, p95 = timed(session_call(timeline), runs)
        results.append((f"contact timeline ({who})", p50, p95, "< 50"))
        p50, p95 = timed(session_call(counts), max(5, runs // 4))
        results.append((f"view counts, all views ({who})", p50, p95, "< 100"))
        # Same-run reference for the two parts that moved to appended tallies (0026): the queries
        # they replaced (the caller's read marks joined to their conversations; every open
        # conversation-deal pair joined to deals and conversations).

        def old_unread(s: Session, i: int, cs: list[Caller] = callers) -> object:
            caller = cs[i % len(cs)]
            return s.exec(
                select(func.count(col(Thread.id)))
                .select_from(ThreadRead)
                .join(Thread, col(Thread.id) == col(ThreadRead.thread_id))
                .where(
                    col(ThreadRead.user_id) == caller.user_id,
                    col(ThreadRead.read_at) >= col(Thread.last_date),
                    access.thread_visible(caller),
                    inbox_views.status_clause(ConversationStatus.OPEN),
                )
            ).one()

        def old_stages(s: Session, i: int, cs: list[Caller] = callers) -> object:
            caller = cs[i % len(cs)]
            return s.exec(
                select(Deal.stage, func.count(distinct(col(ThreadDeal.thread_id))))
                .select_from(ThreadDeal)
                .join(Deal, col(Deal.id) == col(ThreadDeal.deal_id))
                .join(Thread, col(Thread.id) == col(ThreadDeal.thread_id))
                .where(
                    inbox_views.deal_links_visible(s, caller),
                    col(Deal.tenant_id) == caller.tenant_id,
                    inbox_views.status_clause(ConversationStatus.OPEN),
                )
                .group_by(col(Deal.stage))
            ).all()

        def parts_now(s: Session, i: int, cs: list[Caller] = callers) -> object:
            caller = cs[i % len(cs)]
            visible = {int(a or 0) for a in s.exec(access.visible_account_ids(caller)).all()}
            read = inbox_counts._read_open(s, caller.user_id or 0, visible, caller.is_admin, [])
            return read, inbox_counts._stage_counts(s, caller, visible, [])

        p50, p95 = timed(session_call(parts_now), max(5, runs // 4))
        results.append((f"  unread + deal-stage parts from the tallies ({who})", p50, p95, "-"))
        p50, p95 = timed(session_call(old_unread), max(5, runs // 4))
        results.append((f"  reference: unread part before 0026 ({who})", p50, p95, "-"))
        p50, p95 = timed(session_call(old_stages), max(5, runs // 4))
        results.append((f"  reference: deal-stage part before 0026 ({who})", p50, p95, "-"))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=0, help="default: 30%% of the messages")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--keep", action="store_true", help="keep the generated database (to study plans)")
    parser.add_argument(
        "--generate-only", action="store_true", help="generate and keep the database, measure nothing"
    )
    parser.add_argument(
        "--reuse",
        metavar="URL",
        help="measure a database kept by an earlier run (its --messages and --db must be given again);"
        " generation can then happen while the machine is busy and the measurements when it is quiet",
    )
    args = parser.parse_args(argv)
    threads = args.threads or max(1, int(args.messages * 0.3))
    rng = random.Random(7)
    if args.reuse:
        engine, drop = make_engine(args.reuse), lambda: None
        args.keep = True
    else:
        engine, drop = _engine(args.db)
    results: list[tuple[str, float, float, str]] = []
    try:
        print(f"inbox bench: {args.messages:,} messages, {threads:,} conversations, {args.db}")
        migrate(engine)  # a reused database gets the migrations added since it was generated
        if args.reuse:
            info = {"words": vocabulary(random.Random(VOCABULARY_SEED))}  # the generated one
        else:
            info = generate(engine, args.messages, threads, rng)
        if not args.generate_only:
            results = measure(engine, info, args.runs, rng)
    finally:
        if args.keep or args.generate_only:
            print(f"\n  kept: {engine.url.render_as_string(hide_password=True)}")
        else:
            drop()
    if not results:
        return
    print(f"\n| measure ({args.db}, {args.messages:,} messages) | p50 ms | p95 ms | target ms |")
    print("| --- | ---: | ---: | ---: |")
    for label, p50, p95, target in results:
        print(f"| {label} | {p50:.1f} | {p95:.1f} | {target} |")


if __name__ == "__main__":
    main()
