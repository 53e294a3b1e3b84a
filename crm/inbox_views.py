"""Reading the shared inbox: the threads a caller may see, one thread, one message.

Everything goes through `crm.access`: a member sees the threads holding a message located in
an active account granted to them, and *only those messages* of such a thread (a conversation
that also reached another team's mailbox does not show that team's copies); an admin sees the
tenant. Lists use keyset pagination on (last activity, id), never OFFSET: page 500 costs what
page 1 costs, and a thread that receives mail while someone pages moves to the top instead of
shifting every later page by one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, and_, cast, exists, false, func, literal, or_, true
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

import signatures
from core.caller import Caller
from core.errors import InvalidInput, not_found
from core.types import ConversationStatus, Direction, FolderRole, UTCDateTime, utcnow
from crm import access, conversations, search
from crm.keyset import EPOCH, decode_cursor, encode_cursor, like_pattern
from crm.models import (
    AssignmentRule,
    FolderState,
    ImapUid,
    Message,
    MessageLink,
    Thread,
    ThreadAccount,
    ThreadDeal,
    ThreadStage,
)

MAX_PAGE = 200


# ---------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True, slots=True)
class Participant:
    email: str
    name: str = ""


class Assignee(enum.StrEnum):
    ME = "me"
    UNASSIGNED = "unassigned"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Every field narrows the list; None means "any". `text` is a full-text search over the
    subject, participants and bodies of the messages the caller sees (accents and case folded,
    every word a prefix)."""

    account_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    deal_stage: str | None = None  # linked to a deal in that stage (the sidebar's per-stage views)
    direction: Direction | None = None  # threads holding at least one message of that direction
    since: datetime | None = None  # last activity at or after
    until: datetime | None = None  # last activity before
    text: str | None = None
    status: ConversationStatus | None = None  # effective: a snooze whose time has come is open
    assignee: Assignee | int | None = None  # ME, UNASSIGNED, ANY (someone) or a user id
    unread: bool | None = None  # for the caller
    has_attachment: bool | None = None
    waiting: bool | None = None  # our message was the last one, unanswered for the account's follow-up days


@dataclass(frozen=True, slots=True)
class ThreadSummary:
    id: int
    subject: str
    last_date: datetime | None
    message_count: int  # messages the caller sees
    last_from: Participant | None
    snippet: str
    status: ConversationStatus
    assignee_user_id: int | None
    unread: bool


@dataclass(frozen=True, slots=True)
class ThreadPage:
    items: tuple[ThreadSummary, ...]
    next_cursor: str | None  # pass back to get the next page; None: this was the last


@dataclass(frozen=True, slots=True)
class AttachmentView:
    filename: str | None
    content_type: str
    size: int
    inline: bool


@dataclass(frozen=True, slots=True)
class LocationView:
    account_id: int
    folder: FolderRole


@dataclass(frozen=True, slots=True)
class LinkView:
    record_kind: str
    record_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    message_id: str
    thread_id: int | None
    date: datetime | None
    direction: Direction
    subject: str
    sender: Participant | None
    to: tuple[Participant, ...]
    cc: tuple[Participant, ...]
    bcc: tuple[Participant, ...]  # only on mail we sent: a received Bcc is nobody's business
    text_body: str
    # Sanitized on the server (no script, forms, frames, event handlers); a face still shows it
    # in a sandboxed frame under a strict CSP.
    html_body: str
    remote_images_held: int  # images that would have loaded from the sender's servers
    attachments: tuple[AttachmentView, ...]
    locations: tuple[LocationView, ...]  # where the caller can find it
    links: tuple[LinkView, ...]
    malformed: bool
    headers_only: bool
    # Mail that reached a forwarding address (crm.forwarding): who forwarded it ("forwarded by
    # ..."), and whether its original sender could not be found (credited to the forwarder).
    forwarded_by: str | None = None
    forward_unattributed: bool = False


@dataclass(frozen=True, slots=True)
class ThreadView:
    id: int
    subject: str
    first_date: datetime | None
    last_date: datetime | None
    status: ConversationStatus
    snoozed_until: datetime | None
    assignee_user_id: int | None
    messages: tuple[MessageView, ...]


# ---------------------------------------------------------------------------------------------
# Keyset cursor: the (last_date, id) of the last thread on the page, opaque to clients.


# ---------------------------------------------------------------------------------------------
# Lists


def _visible_message_in_thread(caller: Caller, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS a message of the thread that the caller sees and that meets `conditions`."""
    return exists().where(
        col(Message.thread_id) == col(Thread.id), access.message_visible(caller), *conditions
    )


def _in_account(account_id: int) -> ColumnElement[bool]:
    return exists().where(
        col(ThreadAccount.thread_id) == col(Thread.id), col(ThreadAccount.account_id) == account_id
    )


def _linked(kind: str, record_id: int) -> ColumnElement[bool]:
    return exists().where(
        col(MessageLink.message_pk) == col(Message.id),
        col(MessageLink.record_kind) == kind,
        col(MessageLink.record_id) == record_id,
    )


def deal_links_visible(session: Session, caller: Caller) -> ColumnElement[bool]:
    """A WHERE clause on `ThreadDeal`: pairs whose linked mail the caller sees (a member: one of
    the accounts holding it is theirs, as `access.message_visible` decides for each message)."""
    in_tenant = col(ThreadDeal.tenant_id) == caller.tenant_id
    if caller.is_admin:
        return in_tenant
    accounts = [a or 0 for a in session.exec(access.visible_account_ids(caller)).all()]
    if not accounts:
        return false()
    return and_(in_tenant, or_(*(col(ThreadDeal.link_key).contains(f",{a},") for a in accounts)))


def _in_deal_stage(session: Session, caller: Caller, stage: str) -> ColumnElement[bool]:
    """Threads holding a message the caller sees linked to a deal in `stage`: the set of such
    threads from `thread_stage` (one row per conversation and stage, with the accounts holding
    its mail linked to deals in that stage; kept by triggers, 0026), not tested thread by thread
    down the list nor gathered from every conversation-deal pair."""
    visible: ColumnElement[bool] = true()
    if not caller.is_admin:
        accounts = [a or 0 for a in session.exec(access.visible_account_ids(caller)).all()]
        if not accounts:
            return false()
        visible = or_(*(col(ThreadStage.stage_key).contains(f",{a},") for a in accounts))
    threads = select(col(ThreadStage.thread_id)).where(
        col(ThreadStage.tenant_id) == caller.tenant_id, col(ThreadStage.stage) == stage, visible
    )
    return col(Thread.id).in_(threads)


def _filter_clauses(session: Session, caller: Caller, f: ThreadFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if f.account_id is not None:
        access.get_account(session, caller, f.account_id)  # an account the caller cannot see: not found
        clauses.append(_in_account(f.account_id))
    for kind, record_id in (("contact", f.contact_id), ("company", f.company_id), ("deal", f.deal_id)):
        if record_id is not None:
            clauses.append(_visible_message_in_thread(caller, _linked(kind, record_id)))
    if f.deal_stage is not None:
        clauses.append(_in_deal_stage(session, caller, f.deal_stage))
    if f.direction is not None:
        clauses.append(_visible_message_in_thread(caller, col(Message.direction) == f.direction))
    if f.since is not None:
        clauses.append(col(Thread.last_date) >= f.since)
    if f.until is not None:
        clauses.append(col(Thread.last_date) < f.until)
    if f.status is not None:
        clauses.append(status_clause(f.status))
    if f.assignee is not None:
        clauses.append(_assignee_clause(caller, f.assignee, session.get_bind().dialect.name))
    if f.unread is not None:
        unread = conversations.unread_clause(caller)
        clauses.append(unread if f.unread else ~unread)
    if f.has_attachment is not None:
        with_files = _visible_message_in_thread(caller, cast(col(Message.attachments), String) != "[]")
        clauses.append(with_files if f.has_attachment else ~with_files)
    if f.waiting is not None:
        waiting = waiting_clause(session, caller)
        clauses.append(waiting if f.waiting else ~waiting)
    if f.text and f.text.strip():
        # Full text (subject, participants, bodies) through the search index; a query with no
        # searchable word (punctuation only) falls back to a literal match on subject and sender.
        matched = search.matching_messages(session, f.text)
        if matched is None:
            pattern = like_pattern(f.text.strip())
            matched = or_(
                col(Message.subject).ilike(pattern, escape="\\"),
                col(Message.from_email).ilike(pattern, escape="\\"),
            )
            clauses.append(_visible_message_in_thread(caller, matched))
        else:
            clauses.append(_text_clause(session, caller, matched))
    return clauses


# A search whose words are in fewer messages than this lists its conversations from the index's
# set of messages; a more common one walks the conversations newest first, where matches are dense.
SEARCH_SET_LIMIT = 5000


def _text_clause(session: Session, caller: Caller, matched: ColumnElement[bool]) -> ColumnElement[bool]:
    """Conversations holding a message the caller sees that matches the search. Two plans, and the
    index decides between them with a bounded read (a LIMIT inside the index scan): a selective
    search (a name, an order number: most real searches) reads at most SEARCH_SET_LIMIT matching
    messages and the list is that set of conversations sorted, whatever the tenant's size; a
    search on common words is found among the newest conversations long before the walk down the
    list gets far. Testing thread by thread for a rare word walks every conversation of the
    tenant; reading a common word's whole set costs hundreds of thousands of rows."""
    found = session.exec(
        select(col(Message.thread_id))
        .where(matched, access.message_visible(caller), col(Message.thread_id).is_not(None))
        .limit(SEARCH_SET_LIMIT)
    ).all()
    if len(found) < SEARCH_SET_LIMIT:
        return col(Thread.id).in_(sorted({t for t in found if t is not None}))
    return _visible_message_in_thread(caller, matched)


def status_clause(status: ConversationStatus) -> ColumnElement[bool]:
    """Threads whose *effective* status is `status` (no job has to wake snoozed ones)."""
    now = utcnow()
    snoozed = col(Thread.status) == ConversationStatus.SNOOZED
    awake = or_(col(Thread.snoozed_until).is_(None), col(Thread.snoozed_until) <= now)
    if status is ConversationStatus.OPEN:
        return or_(col(Thread.status) == ConversationStatus.OPEN, and_(snoozed, awake))
    if status is ConversationStatus.SNOOZED:
        return and_(snoozed, col(Thread.snoozed_until) > now)
    return col(Thread.status) == status


def waiting_clause(session: Session, caller: Caller) -> ColumnElement[bool]:
    """Conversations still open whose last message is ours and has had no answer for the
    follow-up days of (one of) their accounts (3 unless an account's rule says otherwise)."""
    now = utcnow()
    days_of = dict(
        session.exec(
            select(AssignmentRule.account_id, AssignmentRule.follow_up_days).where(
                AssignmentRule.tenant_id == caller.tenant_id
            )
        ).all()
    )
    groups: dict[int, list[int]] = {}
    for account_id in session.exec(access.visible_account_ids(caller)).all():
        groups.setdefault(days_of.get(account_id or 0, 3), []).append(account_id or 0)
    if not groups:
        return false()
    not_closed = col(Thread.status) != ConversationStatus.CLOSED
    ours_last = col(Thread.last_direction) == Direction.OUTBOUND
    if len(groups) == 1:  # one follow-up delay for every account the caller sees: no join needed
        (days,) = groups
        return and_(not_closed, ours_last, col(Thread.last_date) <= now - timedelta(days=days))
    per_days = [
        and_(
            col(Thread.last_date) <= now - timedelta(days=days),
            exists().where(
                col(ThreadAccount.thread_id) == col(Thread.id), col(ThreadAccount.account_id).in_(accounts)
            ),
        )
        for days, accounts in sorted(groups.items())
    ]
    return and_(not_closed, ours_last, or_(*per_days))


def _assignee_clause(caller: Caller, assignee: Assignee | int, dialect: str = "") -> ColumnElement[bool]:
    if assignee == Assignee.ME:
        return col(Thread.assignee_user_id) == caller.user_id
    if assignee == Assignee.UNASSIGNED:
        if dialect == "sqlite":
            # Written so SQLite uses no index on the assignee: half the conversations are
            # unassigned, and walking the last-activity index finds a page of them at once where
            # the assignee index would collect them all and sort (60 -> 6 ms p95 at 1,000,000
            # messages). PostgreSQL's planner chooses well with the plain test (and worse without).
            return func.coalesce(col(Thread.assignee_user_id), 0) == 0
        return col(Thread.assignee_user_id).is_(None)
    if assignee == Assignee.ANY:
        return col(Thread.assignee_user_id).is_not(None)
    return col(Thread.assignee_user_id) == int(assignee)


def list_threads(
    *,
    session: Session,
    caller: Caller,
    filters: ThreadFilter | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ThreadPage:
    """Threads the caller may see, most recent activity first, `limit` at a time."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(
            "invalid_page_size", f"A page holds 1 to {MAX_PAGE} threads.", field="limit", maximum=MAX_PAGE
        )
    last_key = col(Thread.last_date)  # never NULL (crm.threads): the list walks its index
    query = select(Thread).where(
        access.thread_visible(caller), *_filter_clauses(session, caller, filters or ThreadFilter())
    )
    if cursor:
        after_date, after_id = decode_cursor(cursor)
        query = query.where(
            or_(last_key < after_date, and_(last_key == after_date, col(Thread.id) < after_id))
        )
    rows = session.exec(query.order_by(last_key.desc(), col(Thread.id).desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    summaries = _summaries(session, caller, list(rows))
    next_cursor = encode_cursor(rows[-1].last_date, rows[-1].id or 0) if more and rows else None
    return ThreadPage(items=summaries, next_cursor=next_cursor)


_SUMMARY_COLUMNS: tuple[Any, ...] = (
    Message.id,
    Message.thread_id,
    Message.date,
    Message.from_email,
    Message.from_name,
    Message.text_body,
)


def _summaries(session: Session, caller: Caller, threads: list[Thread]) -> tuple[ThreadSummary, ...]:
    if not threads:
        return ()
    ids = [t.id for t in threads]
    unread = set(
        session.exec(
            select(Thread.id).where(col(Thread.id).in_(ids), conversations.unread_clause(caller))
        ).all()
    )
    counts: dict[int, int] = {}
    latest: dict[int, Message] = {}
    # One query for the page: each visible message's thread, newest first (a page is at most
    # MAX_PAGE threads, and only the newest message of each is kept).
    messages = session.exec(
        select(Message)
        .options(load_only(*_SUMMARY_COLUMNS))  # never raw bytes or HTML for a list
        .where(col(Message.thread_id).in_(ids), access.message_visible(caller))
        .order_by(col(Message.thread_id), col(Message.date).desc(), col(Message.id).desc())
    ).all()
    for message in messages:
        thread_id = message.thread_id or 0
        counts[thread_id] = counts.get(thread_id, 0) + 1
        latest.setdefault(thread_id, message)
    out = []
    for thread in threads:
        last = latest.get(thread.id or 0)
        out.append(
            ThreadSummary(
                id=thread.id or 0,
                subject=thread.subject,
                last_date=thread.last_date,
                message_count=counts.get(thread.id or 0, 0),
                last_from=Participant(last.from_email, last.from_name) if last and last.from_email else None,
                snippet=snippet_of(last.text_body) if last else "",
                status=conversations.effective_status(thread),
                assignee_user_id=thread.assignee_user_id,
                unread=thread.id in unread,
            )
        )
    return tuple(out)


def snippet_of(text: str, size: int = 140) -> str:
    """The start of the newest message's own words: quoted lines ('>') are the older mail."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(">")]
    flat = " ".join(lines)
    return flat if len(flat) <= size else flat[: size - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# One thread, one message


def get_thread(*, session: Session, caller: Caller, thread_id: int) -> ThreadView:
    thread = access.get_thread(session, caller, thread_id)
    messages = session.exec(
        select(Message)
        .where(Message.thread_id == thread.id, access.message_visible(caller))
        .order_by(func.coalesce(col(Message.date), literal(EPOCH, UTCDateTime)), col(Message.id))
    ).all()
    views = _message_views(session, caller, list(messages))
    state = conversations.get_state(session=session, caller=caller, thread_id=thread.id or 0)
    return ThreadView(
        id=thread.id or 0,
        subject=thread.subject,
        first_date=thread.first_date,
        last_date=thread.last_date,
        status=state.status,
        snoozed_until=state.snoozed_until,
        assignee_user_id=state.assignee_user_id,
        messages=views,
    )


def get_message(*, session: Session, caller: Caller, message_pk: int) -> MessageView:
    return _message_views(session, caller, [access.get_message(session, caller, message_pk)])[0]


def find_by_message_id(*, session: Session, caller: Caller, message_id: str) -> MessageView:
    """A message by its Message-ID header (with or without the angle brackets)."""
    wanted = message_id.strip()
    if not wanted:
        raise InvalidInput("invalid_message_id", "Give a Message-ID.", field="message_id")
    if not wanted.startswith("<"):
        wanted = f"<{wanted}>"
    found = session.exec(
        select(Message).where(Message.message_id == wanted, access.message_visible(caller))
    ).first()
    if found is None:
        raise not_found("message", wanted)
    return _message_views(session, caller, [found])[0]


def _display_html(html: str) -> tuple[str, int]:
    """Sanitized mail HTML with remote images held back (no tracking pixel reaches the sender)."""
    if not html:
        return "", 0
    return signatures.hold_remote_images(signatures.sanitize_mail_html(html))


def _participants(rows: list[dict[str, Any]]) -> tuple[Participant, ...]:
    return tuple(Participant(str(r.get("email", "")), str(r.get("name", ""))) for r in rows)


def _message_views(session: Session, caller: Caller, messages: list[Message]) -> tuple[MessageView, ...]:
    if not messages:
        return ()
    pks = [m.id for m in messages]
    visible_accounts = access.visible_account_ids(caller)
    locations: dict[int, set[tuple[int, FolderRole]]] = {}
    for message_pk, account_id, role in session.exec(
        select(ImapUid.message_pk, ImapUid.account_id, FolderState.role)
        .join(FolderState, col(FolderState.id) == col(ImapUid.folder_id))
        .where(col(ImapUid.message_pk).in_(pks), col(ImapUid.account_id).in_(visible_accounts))
    ).all():
        locations.setdefault(message_pk or 0, set()).add((account_id, FolderRole(role)))
    links: dict[int, list[LinkView]] = {}
    for link in session.exec(
        select(MessageLink).where(col(MessageLink.message_pk).in_(pks)).order_by(col(MessageLink.id))
    ).all():
        links.setdefault(link.message_pk, []).append(
            LinkView(record_kind=str(link.record_kind), record_id=link.record_id, reason=str(link.reason))
        )
    shown = {m.id: _display_html(m.html_body) for m in messages}
    return tuple(
        MessageView(
            id=m.id or 0,
            message_id=m.message_id,
            thread_id=m.thread_id,
            date=m.date,
            direction=m.direction,
            subject=m.subject,
            sender=Participant(m.from_email, m.from_name) if m.from_email else None,
            to=_participants(m.to_addrs),
            cc=_participants(m.cc_addrs),
            bcc=_participants(m.bcc_addrs) if m.direction is Direction.OUTBOUND else (),
            text_body=m.text_body,
            html_body=shown[m.id][0],
            remote_images_held=shown[m.id][1],
            attachments=tuple(
                AttachmentView(
                    filename=a.get("filename"),
                    content_type=str(a.get("content_type", "application/octet-stream")),
                    size=int(a.get("size", 0)),
                    inline=bool(a.get("inline", False)),
                )
                for a in m.attachments
            ),
            locations=tuple(LocationView(a, r) for a, r in sorted(locations.get(m.id or 0, set()))),
            links=tuple(links.get(m.id or 0, [])),
            malformed=m.malformed,
            headers_only=m.headers_only,
            forwarded_by=m.headers.get("x-crm-forwarded-by"),
            forward_unattributed=m.headers.get("x-crm-credit") == "unattributed",
        )
        for m in messages
    )
