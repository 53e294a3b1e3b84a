"""Conversation threading for a batch of newly stored messages.

The idea of RFC 5256's REFERENCES algorithm, kept simple: a message joins the thread of any
message it references (In-Reply-To, References), and of any stored message that references it
(a reply synced before its parent); when those point at different threads, the threads merge. A
message with no such relation joins a thread by subject only among the same participants within
a short window, so "Re: Hello" from a customer joins its conversation while two unrelated
"Hello" mails from different people stay apart.

Done per batch with a fixed number of queries (parents, children, subject candidates), then in
memory: threading 200 messages costs a handful of SELECTs, not several per message. It runs
before the batch's rows are inserted, so each is written once, with its thread.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, insert, literal, select as core_select, update
from sqlmodel import Session, col, select

from core.types import ConversationStatus, Direction
from crm import conversations
from crm.bulk import prepared_executemany, select_rows
from crm.keyset import EPOCH
from crm.models import ImapUid, LinkSuppression, Message, MessageRef, Thread, ThreadAccount, ThreadSplit
from crm.stored_mail import StoredMessage

SUBJECT_THREAD_WINDOW = timedelta(days=7)
UNDATED = EPOCH  # the last activity of a thread whose mail has no date

ThreadKey = tuple[str, int]  # ("db", thread id) or ("new", n)


class _Union:
    """Union-find over thread keys; a stored thread is preferred as the representative. Stored
    threads a user split apart (`apart`) are never joined again by mail that refers to both."""

    def __init__(self, apart: frozenset[tuple[int, int]] = frozenset()) -> None:
        self.parent: dict[ThreadKey, ThreadKey] = {}
        self.apart = apart

    def find(self, key: ThreadKey) -> ThreadKey:
        self.parent.setdefault(key, key)
        root = key
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[key] != root:
            self.parent[key], key = root, self.parent[key]
        return root

    def union(self, a: ThreadKey, b: ThreadKey) -> ThreadKey:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if ra[0] == rb[0] == "db" and (min(ra[1], rb[1]), max(ra[1], rb[1])) in self.apart:
            return ra  # kept apart by a user: the first candidate (the closest parent) wins
        # Keep the older stored thread; a new thread never absorbs a stored one.
        keep, drop = sorted((ra, rb), key=lambda k: (k[0] != "db", k[1]))
        self.parent[drop] = keep
        return keep


def _chunks(items: Sequence[str], size: int = 500) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def thread_new_mail(
    *, session: Session, tenant_id: int, messages: Sequence[StoredMessage], refs: Sequence[list[str]]
) -> list[int]:
    """Set `thread_id` on the batch's `messages` *before* they are inserted (creating, merging
    stored threads as needed), so each row is written once with its thread instead of inserted,
    then updated. `refs[i]` are the Message-IDs `messages[i]` refers to. Returns the threads to
    `refresh` once the rows are in."""
    if not messages:
        return []
    ordered = sorted(range(len(messages)), key=lambda i: (messages[i].date is None, messages[i].date, i))
    all_refs = sorted({r for rs in refs for r in rs})
    own_ids = sorted({m.message_id for m in messages})

    parents: dict[str, int] = {}
    for chunk in _chunks(all_refs):
        for message_id, thread_id in select_rows(
            session,
            select(Message.message_id, Message.thread_id).where(
                Message.tenant_id == tenant_id,
                col(Message.message_id).in_(chunk),
                col(Message.thread_id).is_not(None),
            ),
        ):
            parents[message_id] = thread_id or 0
    children: dict[str, set[int]] = defaultdict(set)
    for chunk in _chunks(own_ids):
        for ref, thread_id in select_rows(
            session,
            select(MessageRef.ref_message_id, Message.thread_id)
            .join(Message, col(Message.id) == col(MessageRef.message_pk))
            .where(
                MessageRef.tenant_id == tenant_id,
                col(MessageRef.ref_message_id).in_(chunk),
                col(Message.thread_id).is_not(None),
            ),
        ):
            children[ref].add(thread_id or 0)
    subjects: dict[tuple[str, str], list[tuple[datetime, ThreadKey]]] = defaultdict(list)
    dated = [m for m in messages if m.date is not None and m.normalized_subject]
    if dated:
        low = min(m.date for m in dated if m.date) - SUBJECT_THREAD_WINDOW
        high = max(m.date for m in dated if m.date) + SUBJECT_THREAD_WINDOW
        keys = sorted({m.participants_key for m in dated})
        for chunk in _chunks(sorted({m.normalized_subject for m in dated})):
            # Subject and participants both filtered in SQL (one index): a common subject like
            # "Invoice" must not pull every invoice of the window into each batch.
            for subject, people, when, thread_id in select_rows(
                session,
                select(
                    Message.normalized_subject, Message.participants_key, Message.date, Message.thread_id
                ).where(
                    Message.tenant_id == tenant_id,
                    col(Message.normalized_subject).in_(chunk),
                    col(Message.participants_key).in_(keys),
                    col(Message.thread_id).is_not(None),
                    col(Message.date) >= low,
                    col(Message.date) <= high,
                ),
            ):
                if when is not None:
                    subjects[(subject, people)].append((when, ("db", thread_id or 0)))

    union = _Union(_split_pairs(session, tenant_id))
    new_count = 0
    assigned: dict[int, ThreadKey] = {}
    local_ids: dict[str, ThreadKey] = {}
    local_children: dict[str, list[ThreadKey]] = defaultdict(list)
    for index in ordered:
        message = messages[index]
        candidates: list[ThreadKey] = []
        # The direct parent (In-Reply-To, stored last) first: it decides when threads are apart.
        for ref in reversed(refs[index]):
            if ref in local_ids:
                candidates.append(local_ids[ref])
            elif ref in parents:
                candidates.append(("db", parents[ref]))
        candidates += [("db", t) for t in sorted(children.get(message.message_id, ()))]
        candidates += local_children.get(message.message_id, [])
        if not candidates and message.date is not None and message.normalized_subject:
            for date, key in subjects.get((message.normalized_subject, message.participants_key), []):
                if abs(date - message.date) <= SUBJECT_THREAD_WINDOW:
                    candidates.append(key)
                    break
        if candidates:
            key = candidates[0]
            for other in candidates[1:]:
                key = union.union(key, other)
            key = union.find(key)
        else:
            key = ("new", new_count)
            new_count += 1
            union.find(key)
        assigned[index] = key
        local_ids[message.message_id] = key
        for ref in refs[index]:
            local_children[ref].append(key)
        if message.normalized_subject and message.date is not None:
            subjects[(message.normalized_subject, message.participants_key)].append((message.date, key))

    # Materialise new threads, then point every message at its thread's representative.
    roots = {union.find(k) for k in assigned.values()}
    fresh = sorted(r for r in roots if r[0] == "new")
    created = dict(zip(fresh, _new_threads(session, tenant_id, len(fresh)), strict=True))
    for index, message in enumerate(messages):
        root = union.find(assigned[index])
        message.thread_id = created.get(root, root[1])
    # Stored threads absorbed into another one: move their mail and sticky unlinks.
    merged: set[int] = set()
    for key in list(union.parent):
        root = union.find(key)
        if key[0] == "db" and key != root:
            target = created.get(root, root[1])
            _merge(session, source=key[1], target=target)
            merged.add(target)
    session.flush()
    return sorted({m.thread_id for m in messages if m.thread_id is not None} | merged)


def _new_threads(session: Session, tenant_id: int, count: int) -> list[int]:
    """Insert `count` empty threads (`_refresh` fills them once their mail is in) with one Core
    statement; their ids, ascending. New threads are interchangeable until then, so the order
    RETURNING hands ids back in does not matter (SQLite does not promise one, and asking
    SQLAlchemy to sort them makes it insert row by row)."""
    if count <= 0:
        return []
    table = Thread.__table__  # type: ignore[attr-defined]
    row = {
        "tenant_id": tenant_id,
        "subject": "",
        "normalized_subject": "",
        "first_date": None,
        "last_date": None,
        "message_count": 0,
        "status": ConversationStatus.OPEN,
        "snoozed_until": None,
        "assignee_user_id": None,
        "last_direction": Direction.INBOUND,
    }
    connection = session.connection()
    if prepared_executemany(connection):
        # PostgreSQL: one short statement (the same row `count` times) instead of a VALUES group
        # per row, whose placeholders psycopg would rewrite in Python on every batch.
        copies = core_select(*(literal(value, table.c[key].type) for key, value in row.items())).select_from(
            func.generate_series(1, count).alias("n")
        )
        ids = connection.execute(insert(table).from_select(list(row), copies).returning(table.c.id))
    else:
        ids = connection.execute(insert(table).returning(table.c.id), [dict(row) for _ in range(count)])
    return sorted(pk for (pk,) in ids)


def _split_pairs(session: Session, tenant_id: int) -> frozenset[tuple[int, int]]:
    rows = session.exec(
        select(ThreadSplit.thread_a, ThreadSplit.thread_b).where(ThreadSplit.tenant_id == tenant_id)
    ).all()
    return frozenset((min(a, b), max(a, b)) for a, b in rows)


def merge_into(session: Session, *, source: int, target: int, actor_user_id: int | None) -> None:
    """Move every message of thread `source` (and the team's work on it) into `target`, delete
    `source` and recompute `target` (a user's merge; threading itself does the same)."""
    _merge(session, source=source, target=target, by_user=True, actor_user_id=actor_user_id)
    session.flush()
    _refresh(session, [target])


def refresh(session: Session, thread_ids: list[int]) -> None:
    _refresh(session, thread_ids)


def rebuild_thread_accounts(session: Session, thread_ids: list[int]) -> None:
    """Recompute which accounts hold mail of these threads (the triggers only ever add pairs;
    a message moved out by a user's split can leave one behind)."""
    session.execute(delete(ThreadAccount).where(col(ThreadAccount.thread_id).in_(thread_ids)))
    pairs = session.exec(
        select(Message.thread_id, ImapUid.account_id)
        .join(ImapUid, col(ImapUid.message_pk) == col(Message.id))
        .where(col(Message.thread_id).in_(thread_ids))
        .distinct()
    ).all()
    for thread_id, account_id in pairs:
        session.add(ThreadAccount(thread_id=thread_id or 0, account_id=account_id))
    session.flush()


def _merge(
    session: Session, *, source: int, target: int, by_user: bool = False, actor_user_id: int | None = None
) -> None:
    session.execute(update(Message).where(col(Message.thread_id) == source).values(thread_id=target))
    kept = {
        (s.record_kind, s.record_id)
        for s in session.exec(select(LinkSuppression).where(LinkSuppression.thread_id == target)).all()
    }
    for suppression in session.exec(select(LinkSuppression).where(LinkSuppression.thread_id == source)).all():
        if (suppression.record_kind, suppression.record_id) in kept:
            session.delete(suppression)
        else:
            suppression.thread_id = target
            session.add(suppression)
    session.flush()
    conversations.absorb(
        session, source=source, target=target, by_user=by_user, actor_user_id=actor_user_id
    )  # notes, history, state, reads
    session.execute(delete(Thread).where(col(Thread.id) == source))


def _refresh(session: Session, thread_ids: list[int]) -> None:
    """Recompute count, first/last date and subject of the touched threads in one grouped query
    (plus one for the earliest subjects)."""

    for start in range(0, len(thread_ids), 500):
        chunk = thread_ids[start : start + 500]
        stats = select_rows(
            session,
            select(
                Message.thread_id, func.count(col(Message.id)), func.min(Message.date), func.max(Message.date)
            )
            .where(col(Message.thread_id).in_(chunk))
            .group_by(col(Message.thread_id)),
        )
        first_subject: dict[int, str] = {}
        last_direction: dict[int, Direction] = {}
        for thread_id, subject, direction in select_rows(
            session,
            select(Message.thread_id, Message.subject, Message.direction)
            .where(col(Message.thread_id).in_(chunk))
            .order_by(col(Message.thread_id), col(Message.date).asc(), col(Message.id).asc()),
        ):
            first_subject.setdefault(thread_id or 0, subject)
            last_direction[thread_id or 0] = Direction(direction)  # ascending: the newest wins
        # One executemany instead of loading and flushing each thread through the ORM; a Thread
        # object this session already holds is flushed first and expired after, so it reloads.
        rows = [
            {
                "b_id": thread_id,
                "b_count": count,
                "b_first": first,
                # Never NULL: lists walk an index on last_date, and both databases must order alike.
                "b_last": last or UNDATED,
                "b_direction": last_direction.get(thread_id or 0, Direction.INBOUND),
                "b_subject": first_subject.get(thread_id or 0, ""),
            }
            for thread_id, count, first, last in stats
        ]
        if not rows:
            continue
        wanted = set(chunk)
        held = [obj for obj in session.identity_map.values() if isinstance(obj, Thread) and obj.id in wanted]
        if held:
            session.flush()
        table = Thread.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                message_count=bindparam("b_count"),
                first_date=bindparam("b_first"),
                last_date=bindparam("b_last"),
                last_direction=bindparam("b_direction"),
                subject=bindparam("b_subject"),
            ),
            rows,
        )
        for obj in held:
            session.expire(obj)
