"""Notification mail from event templates (issue 10, item 8).

Each event has a built-in wording (subject, text, HTML) and a fixed list of merge tags (flat
names, `{{ conversation_subject }}`); a tenant may override the wording per event. Templates run
in jinja2's immutable sandbox with undefined names refused, the HTML autoescaped and then cleaned
by the signature sanitizer's rules (`signatures.sanitize`, strict profile: only safe tags, links
with allowed schemes). A template naming a tag the event does not have is refused when it is
saved (not when a mail is due), and a preview renders it with sample values.

Who gets what: a notification goes to a user unless the tenant turned notification mail off
(`TenantMailSettings.notifications_enabled`) or the user turned that event off
(`NotificationPref`); sender verification and password reset are always sent (they are asked
for). Mail leaves by the tenant's sending mode (`crm.outbound.system_mail`) on the send queue.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment
from sqlalchemy import func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.settings import get_settings
from core.types import ConversationStatus, Direction, utcnow
from crm import access
from crm.models import (
    MailAccount,
    MailKind,
    NotificationPref,
    NotificationTemplate,
    Tenant,
    TenantMailSettings,
    Thread,
    User,
)
from crm.outbound import system_mail
from crm.outbound.headers import check_header
from crm.outbound.views import OutboundView
from signatures.sanitize import sanitize_rendered_signature_html

MAX_TEMPLATE = 50_000


class Event(enum.StrEnum):
    ASSIGNED = "assigned"
    MENTIONED = "mentioned"
    NEW_IN_WATCHED_INBOX = "new_in_watched_inbox"
    SNOOZE_WOKE = "snooze_woke"
    DAILY_DIGEST = "daily_digest"
    SENDER_VERIFICATION = "sender_verification"
    PASSWORD_RESET = "password_reset"
    NEEDS_CREDENTIALS = "needs_credentials"


ALWAYS_SENT = frozenset({Event.SENDER_VERIFICATION, Event.PASSWORD_RESET})


@dataclass(frozen=True, slots=True)
class Wording:
    subject: str
    text: str
    html: str


_CONV = ("recipient_name", "tenant_name", "conversation_subject", "conversation_url")
TAGS: dict[Event, tuple[str, ...]] = {
    Event.ASSIGNED: (*_CONV, "actor_name"),
    Event.MENTIONED: (*_CONV, "actor_name", "note_excerpt"),
    Event.NEW_IN_WATCHED_INBOX: (*_CONV, "inbox_name", "from_address"),
    Event.SNOOZE_WOKE: _CONV,
    Event.DAILY_DIGEST: ("recipient_name", "tenant_name", "unanswered_count", "oldest_subject", "inbox_url"),
    Event.SENDER_VERIFICATION: ("tenant_name", "sender_address", "verification_url"),
    Event.PASSWORD_RESET: ("recipient_name", "tenant_name", "reset_url"),
    Event.NEEDS_CREDENTIALS: ("recipient_name", "tenant_name", "account_address", "account_url"),
}

SAMPLES: dict[str, str] = {
    "recipient_name": "Mia Moss",
    "tenant_name": "Acme",
    "conversation_subject": "Quote for 40 chairs",
    "conversation_url": "https://crm.example/inbox#thread-42",
    "actor_name": "Leo Lane",
    "note_excerpt": "@mia can you take this one?",
    "inbox_name": "sales@acme.example",
    "from_address": "buyer@globex.example",
    "unanswered_count": "7",
    "oldest_subject": "Invoice 1043",
    "inbox_url": "https://crm.example/inbox",
    "sender_address": "news@acme.example",
    "verification_url": "https://crm.example/verify-sender?token=...",
    "reset_url": "https://crm.example/reset?token=...",
    "account_address": "sales@acme.example",
    "account_url": "https://crm.example/admin",
}

_LINK = '<p><a href="{{ %s }}">{{ %s }}</a></p>'
DEFAULTS: dict[Event, Wording] = {
    Event.ASSIGNED: Wording(
        "[{{ tenant_name }}] Assigned to you: {{ conversation_subject }}",
        "Hello {{ recipient_name }},\n\n{{ actor_name }} assigned you the conversation "
        '"{{ conversation_subject }}".\n\n{{ conversation_url }}\n',
        "<p>Hello {{ recipient_name }},</p><p>{{ actor_name }} assigned you the conversation "
        "<b>{{ conversation_subject }}</b>.</p>" + _LINK % ("conversation_url", "conversation_url"),
    ),
    Event.MENTIONED: Wording(
        "[{{ tenant_name }}] {{ actor_name }} mentioned you: {{ conversation_subject }}",
        "Hello {{ recipient_name }},\n\n{{ actor_name }} mentioned you in a note on "
        '"{{ conversation_subject }}":\n\n  {{ note_excerpt }}\n\n{{ conversation_url }}\n',
        "<p>Hello {{ recipient_name }},</p><p>{{ actor_name }} mentioned you in a note on "
        "<b>{{ conversation_subject }}</b>:</p><blockquote>{{ note_excerpt }}</blockquote>"
        + _LINK
        % ("conversation_url", "conversation_url"),
    ),
    Event.NEW_IN_WATCHED_INBOX: Wording(
        "[{{ tenant_name }}] New in {{ inbox_name }}: {{ conversation_subject }}",
        "Hello {{ recipient_name }},\n\n{{ from_address }} wrote to {{ inbox_name }}: "
        '"{{ conversation_subject }}".\n\n{{ conversation_url }}\n',
        "<p>Hello {{ recipient_name }},</p><p>{{ from_address }} wrote to {{ inbox_name }}: "
        "<b>{{ conversation_subject }}</b>.</p>" + _LINK % ("conversation_url", "conversation_url"),
    ),
    Event.SNOOZE_WOKE: Wording(
        "[{{ tenant_name }}] Back in your inbox: {{ conversation_subject }}",
        'Hello {{ recipient_name }},\n\nThe snoozed conversation "{{ conversation_subject }}" '
        "is back.\n\n{{ conversation_url }}\n",
        "<p>Hello {{ recipient_name }},</p><p>The snoozed conversation <b>{{ conversation_subject }}"
        "</b> is back.</p>" + _LINK % ("conversation_url", "conversation_url"),
    ),
    Event.DAILY_DIGEST: Wording(
        "[{{ tenant_name }}] {{ unanswered_count }} conversations waiting for an answer",
        "Hello {{ recipient_name }},\n\n{{ unanswered_count }} conversations are waiting for an "
        'answer; the oldest: "{{ oldest_subject }}".\n\n{{ inbox_url }}\n',
        "<p>Hello {{ recipient_name }},</p><p>{{ unanswered_count }} conversations are waiting for "
        "an answer; the oldest: <b>{{ oldest_subject }}</b>.</p>" + _LINK % ("inbox_url", "inbox_url"),
    ),
    Event.SENDER_VERIFICATION: Wording(
        "Confirm {{ sender_address }} as the sender of {{ tenant_name }}'s mail",
        "{{ tenant_name }} asked to send mail from {{ sender_address }}.\n\n"
        "To confirm, open this link within 24 hours:\n{{ verification_url }}\n\n"
        "If you did not expect this, ignore this mail: nothing changes without the link.\n",
        "<p>{{ tenant_name }} asked to send mail from {{ sender_address }}.</p>"
        "<p>To confirm, open this link within 24 hours:</p>"
        + _LINK % ("verification_url", "verification_url")
        + "<p>If you did not expect this, ignore this mail.</p>",
    ),
    Event.PASSWORD_RESET: Wording(
        "[{{ tenant_name }}] Reset your password",
        "Hello {{ recipient_name }},\n\nTo choose a new password, open:\n{{ reset_url }}\n\n"
        "If you did not ask for this, ignore this mail.\n",
        "<p>Hello {{ recipient_name }},</p><p>To choose a new password, open:</p>"
        + _LINK % ("reset_url", "reset_url")
        + "<p>If you did not ask for this, ignore this mail.</p>",
    ),
    Event.NEEDS_CREDENTIALS: Wording(
        "[{{ tenant_name }}] {{ account_address }} needs new credentials",
        "Hello {{ recipient_name }},\n\nThe mail server refused the password of {{ account_address }}"
        "; syncing stopped until it is updated.\n\n{{ account_url }}\n",
        "<p>Hello {{ recipient_name }},</p><p>The mail server refused the password of "
        "{{ account_address }}; syncing stopped until it is updated.</p>"
        + _LINK
        % ("account_url", "account_url"),
    ),
}

_HTML_ENV = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_TEXT_ENV = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


@dataclass(frozen=True, slots=True)
class TemplateView:
    event: Event
    subject: str
    text: str
    html: str
    merge_tags: tuple[str, ...]
    customized: bool


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def _event(value: str) -> Event:
    try:
        return Event(value)
    except ValueError as exc:
        raise InvalidInput(
            "event_unknown",
            f"No notification event {value[:64]!r}.",
            field="event",
            events=[e.value for e in Event],
        ) from exc


def _check(event: Event, field: str, source: str) -> None:
    """Syntax and merge tags, at save time."""
    if len(source) > MAX_TEMPLATE:
        raise InvalidInput("template_too_long", f"The {field} is too long.", field=field)
    try:
        parsed = _TEXT_ENV.parse(source)
    except TemplateError as exc:
        raise InvalidInput(
            "template_invalid", f"The {field} is not a valid template: {exc.message}.", field=field
        ) from exc
    unknown = sorted(meta.find_undeclared_variables(parsed) - set(TAGS[event]))
    if unknown:
        raise InvalidInput(
            "merge_tag_unknown",
            f"The {field} uses merge tags this event does not have: {', '.join(unknown)}. "
            f"Available: {', '.join(TAGS[event])}.",
            field=field,
            unknown=unknown,
            available=list(TAGS[event]),
        )


def wording_of(session: Session, tenant_id: int, event: Event) -> tuple[Wording, bool]:
    row = session.get(NotificationTemplate, (tenant_id, event.value))
    if row is None:
        return DEFAULTS[event], False
    return Wording(row.subject, row.text, row.html), True


@functools.lru_cache(maxsize=256)
def _compiled(source: str, *, html: bool) -> Template:
    """jinja2 compiles a template to Python on every `from_string`: tens of milliseconds a mail
    when a scan queues hundreds. A compiled template is immutable, so it is kept by its source."""
    return (_HTML_ENV if html else _TEXT_ENV).from_string(source)


def render_wording(wording: Wording, values: dict[str, Any]) -> Rendered:
    try:
        subject = " ".join(_compiled(wording.subject, html=False).render(values).split())
        text = _compiled(wording.text, html=False).render(values)
        html = sanitize_rendered_signature_html(_compiled(wording.html, html=True).render(values))
    except TemplateError as exc:  # checked at save time; kept safe anyway
        raise InvalidInput("template_invalid", f"The template cannot be rendered: {exc}.") from exc
    return Rendered(subject=check_header("subject", subject[:900]), text=text, html=html)


def list_templates(*, session: Session, caller: Caller) -> tuple[TemplateView, ...]:
    access.require_admin(caller, "see notification templates")
    out = []
    for event in Event:
        wording, custom = wording_of(session, caller.tenant_id, event)
        out.append(TemplateView(event, wording.subject, wording.text, wording.html, TAGS[event], custom))
    return tuple(out)


def get_template(*, session: Session, caller: Caller, event: str) -> TemplateView:
    access.require_admin(caller, "see notification templates")
    which = _event(event)
    wording, custom = wording_of(session, caller.tenant_id, which)
    return TemplateView(which, wording.subject, wording.text, wording.html, TAGS[which], custom)


def save_template(
    *, session: Session, caller: Caller, event: str, subject: str, text: str, html: str
) -> TemplateView:
    """A tenant's wording of an event; unknown merge tags and bad syntax are refused here."""
    access.require_admin(caller, "change notification templates")
    which = _event(event)
    for field, source in (("subject", subject), ("text", text), ("html", html)):
        _check(which, field, source)
    # A trial render with sample values: what the sandbox refuses (private attributes, calls)
    # is refused now, not when a mail is due.
    render_wording(Wording(subject, text, html), {t: SAMPLES[t] for t in TAGS[which]})
    row = session.get(NotificationTemplate, (caller.tenant_id, which.value)) or NotificationTemplate(
        tenant_id=caller.tenant_id, event=which.value, subject="", text="", html=""
    )
    row.subject, row.text, row.html, row.updated_at = subject, text, html, utcnow()
    session.add(row)
    session.flush()
    return TemplateView(which, subject, text, html, TAGS[which], True)


def reset_template(*, session: Session, caller: Caller, event: str) -> TemplateView:
    access.require_admin(caller, "change notification templates")
    which = _event(event)
    row = session.get(NotificationTemplate, (caller.tenant_id, which.value))
    if row is not None:
        session.delete(row)
        session.flush()
    d = DEFAULTS[which]
    return TemplateView(which, d.subject, d.text, d.html, TAGS[which], False)


def preview(
    *,
    session: Session,
    caller: Caller,
    event: str,
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
) -> Rendered:
    """The event's wording (or the one being edited) filled with sample values."""
    access.require_admin(caller, "preview notification templates")
    which = _event(event)
    current, _ = wording_of(session, caller.tenant_id, which)
    wording = Wording(
        subject if subject is not None else current.subject,
        text if text is not None else current.text,
        html if html is not None else current.html,
    )
    for field, source in (("subject", wording.subject), ("text", wording.text), ("html", wording.html)):
        _check(which, field, source)
    tenant = session.get_one(Tenant, caller.tenant_id)
    return render_wording(wording, {**{t: SAMPLES[t] for t in TAGS[which]}, "tenant_name": tenant.name})


# ---------------------------------------------------------------------------------------------
# Preferences


@dataclass(frozen=True, slots=True)
class PrefView:
    event: Event
    enabled: bool
    digest_hour: int | None
    switchable: bool


def get_prefs(*, session: Session, caller: Caller) -> tuple[PrefView, ...]:
    user_id = caller.user_id or 0
    rows = {
        r.event: r for r in session.exec(select(NotificationPref).where(NotificationPref.user_id == user_id))
    }
    return tuple(
        PrefView(
            e,
            rows[e.value].enabled if e.value in rows and e not in ALWAYS_SENT else True,
            rows[e.value].digest_hour if e.value in rows else (8 if e is Event.DAILY_DIGEST else None),
            e not in ALWAYS_SENT,
        )
        for e in Event
    )


def set_pref(
    *, session: Session, caller: Caller, event: str, enabled: bool, digest_hour: int | None = None
) -> tuple[PrefView, ...]:
    """Turn one event's mail on or off for the caller (and the digest's hour, UTC)."""
    which = _event(event)
    if caller.user_id is None:
        raise InvalidInput("user_required", "Preferences belong to a user.", field="user_id")
    if which in ALWAYS_SENT:
        raise InvalidInput(
            "notification_required", f"{which.value} mail is always sent: it was asked for.", field="event"
        )
    if digest_hour is not None and not 0 <= digest_hour <= 23:
        raise InvalidInput("digest_hour_invalid", "The digest hour is 0 to 23 (UTC).", field="digest_hour")
    row = session.get(NotificationPref, (caller.user_id, which.value)) or NotificationPref(
        user_id=caller.user_id, event=which.value
    )
    row.enabled = enabled
    if digest_hour is not None:
        row.digest_hour = digest_hour
    session.add(row)
    session.flush()
    return get_prefs(session=session, caller=caller)


# ---------------------------------------------------------------------------------------------
# Sending


def conversation_url(thread_id: int) -> str:
    return f"{get_settings().public_url.rstrip('/')}/inbox#thread-{thread_id}"


def notify(
    *, session: Session, tenant_id: int, user_id: int, event: Event, values: dict[str, Any]
) -> OutboundView | None:
    """Queue one event's mail to one user; None when the tenant or the user turned it off."""
    if event not in ALWAYS_SENT:
        settings = session.get(TenantMailSettings, tenant_id)
        if settings is not None and not settings.notifications_enabled:
            return None
        pref = session.get(NotificationPref, (user_id, event.value))
        if pref is not None and not pref.enabled:
            return None
    user = session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id or not user.active:
        return None
    tenant = session.get_one(Tenant, tenant_id)
    name = f"{user.first_name} {user.last_name}".strip() or user.email
    full = {"recipient_name": name, "tenant_name": tenant.name, **values}
    wording, _ = wording_of(session, tenant_id, event)
    rendered = render_wording(wording, {t: str(full.get(t, "")) for t in TAGS[event]})
    return system_mail.enqueue(
        session=session,
        tenant_id=tenant_id,
        kind=MailKind.NOTIFICATION,
        to=user.email,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        user_id=user_id,
    )


def _name(session: Session, user_id: int | None) -> str:
    user = session.get(User, user_id) if user_id is not None else None
    if user is None:
        return "The assignment rule"
    return f"{user.first_name} {user.last_name}".strip() or user.email


def on_assigned(
    *, session: Session, tenant_id: int, thread_id: int, subject: str, assignee: int, actor: int | None
) -> None:
    """Hooked in `crm.conversations.assign` and the assignment rules: nobody is told about
    what they did themselves."""
    if assignee == actor:
        return
    notify(
        session=session,
        tenant_id=tenant_id,
        user_id=assignee,
        event=Event.ASSIGNED,
        values={
            "actor_name": _name(session, actor),
            "conversation_subject": subject or "(no subject)",
            "conversation_url": conversation_url(thread_id),
        },
    )


def on_mentioned(
    *, session: Session, tenant_id: int, thread_id: int, subject: str, mentioned: int, actor: int, note: str
) -> None:
    """Hooked in `crm.conversations.add_note` for each colleague @mentioned."""
    if mentioned == actor:
        return
    notify(
        session=session,
        tenant_id=tenant_id,
        user_id=mentioned,
        event=Event.MENTIONED,
        values={
            "actor_name": _name(session, actor),
            "conversation_subject": subject or "(no subject)",
            "conversation_url": conversation_url(thread_id),
            "note_excerpt": " ".join(note.split())[:300],
        },
    )


DEFAULT_DIGEST_HOUR = 8


def send_digests(*, session: Session, now: datetime | None = None) -> int:
    """Queue the daily digest of unanswered conversations for every user whose hour it is (and
    who did not get today's yet). Run hourly by the scheduler; safe to run more often."""
    now = now or utcnow()
    sent = 0
    off = {
        t
        for t in session.exec(
            select(TenantMailSettings.tenant_id).where(
                col(TenantMailSettings.notifications_enabled).is_(False)
            )
        )
    }
    for user in session.exec(select(User).where(col(User.active).is_(True)).order_by(col(User.id))).all():
        if user.tenant_id in off:
            continue
        pref = session.get(NotificationPref, (user.id, Event.DAILY_DIGEST.value))
        if pref is not None and not pref.enabled:
            continue
        hour = pref.digest_hour if pref is not None and pref.digest_hour is not None else DEFAULT_DIGEST_HOUR
        if now.hour != hour:
            continue
        if pref is not None and pref.digest_sent_at is not None and pref.digest_sent_at.date() == now.date():
            continue
        caller = access.caller_of(user)
        waiting = (
            access.thread_visible(caller)
            & (col(Thread.status) == ConversationStatus.OPEN)
            & (col(Thread.last_direction) == Direction.INBOUND)
        )
        count = session.exec(select(func.count()).select_from(Thread).where(waiting)).one()
        if not count:
            continue
        oldest = session.exec(select(Thread.subject).where(waiting).order_by(col(Thread.last_date))).first()
        queued = notify(
            session=session,
            tenant_id=user.tenant_id,
            user_id=user.id or 0,
            event=Event.DAILY_DIGEST,
            values={
                "unanswered_count": str(count),
                "oldest_subject": oldest or "(no subject)",
                "inbox_url": f"{get_settings().public_url.rstrip('/')}/inbox",
            },
        )
        pref = pref or NotificationPref(user_id=user.id or 0, event=Event.DAILY_DIGEST.value)
        pref.digest_sent_at = now
        session.add(pref)
        sent += queued is not None
    session.flush()
    return sent


def on_needs_credentials(*, session: Session, tenant_id: int, account_id: int, account_email: str) -> None:
    """Hooked in `crm.sync_state` when an account stops retrying a refused password: each
    active admin of the tenant is told."""
    admins = session.exec(
        select(User.id).where(
            User.tenant_id == tenant_id, col(User.is_admin).is_(True), col(User.active).is_(True)
        )
    ).all()
    for admin_id in admins:
        notify(
            session=session,
            tenant_id=tenant_id,
            user_id=admin_id or 0,
            event=Event.NEEDS_CREDENTIALS,
            values={
                "account_address": account_email,
                "account_url": f"{get_settings().public_url.rstrip('/')}/admin#account-{account_id}",
            },
        )


def watch_inboxes(*, session: Session, caller: Caller, account_ids: list[int]) -> list[int]:
    """The shared inboxes the caller watches (replaces the list): a new conversation in one of
    them is mailed to the caller. Only inboxes the caller may see."""
    if caller.user_id is None:
        raise InvalidInput("user_required", "Preferences belong to a user.", field="user_id")
    ids = sorted(set(account_ids))
    for account_id in ids:
        access.get_account(session, caller, account_id)
    event = Event.NEW_IN_WATCHED_INBOX.value
    row = session.get(NotificationPref, (caller.user_id, event)) or NotificationPref(
        user_id=caller.user_id, event=event
    )
    row.watched_account_ids = ids
    session.add(row)
    session.flush()
    return ids


def watched_inboxes(*, session: Session, caller: Caller) -> list[int]:
    row = session.get(NotificationPref, (caller.user_id or 0, Event.NEW_IN_WATCHED_INBOX.value))
    return list(row.watched_account_ids) if row is not None else []


@dataclass(frozen=True, slots=True)
class InboxWatchers:
    """Who is told of a new conversation in one inbox (users watching it who may still see it)."""

    user_ids: tuple[int, ...]
    inbox_name: str


def inbox_watchers(*, session: Session, tenant_id: int, account_id: int) -> InboxWatchers:
    """Looked up once per sync batch, not once per new conversation: the queries cost more than
    the rest of storing a message, and nothing in a batch changes who watches."""
    rows = session.exec(
        select(NotificationPref, User)
        .join(User, col(User.id) == col(NotificationPref.user_id))
        .where(
            NotificationPref.event == Event.NEW_IN_WATCHED_INBOX.value,
            col(NotificationPref.enabled).is_(True),
            User.tenant_id == tenant_id,
        )
    ).all()
    account = session.get(MailAccount, account_id)
    user_ids: list[int] = []
    for pref, user in rows:
        if account_id not in pref.watched_account_ids or account is None:
            continue
        caller = access.caller_of(user)
        if (
            session.exec(
                select(MailAccount.id).where(MailAccount.id == account_id, access.account_visible(caller))
            ).first()
            is None
        ):
            continue
        user_ids.append(user.id or 0)
    return InboxWatchers(tuple(user_ids), (account.display_name or account.email) if account else "")


def on_new_conversation(
    *,
    session: Session,
    tenant_id: int,
    account_id: int,
    thread_id: int,
    subject: str,
    from_address: str,
    watchers: InboxWatchers | None = None,
) -> None:
    """Hooked in `crm.assignment.on_new_mail` for a conversation a customer started: each user
    watching that inbox (and still allowed to see it) is told. `watchers`: `inbox_watchers` of
    the account, when the caller has it already."""
    if watchers is None:
        watchers = inbox_watchers(session=session, tenant_id=tenant_id, account_id=account_id)
    for user_id in watchers.user_ids:
        notify(
            session=session,
            tenant_id=tenant_id,
            user_id=user_id,
            event=Event.NEW_IN_WATCHED_INBOX,
            values={
                "inbox_name": watchers.inbox_name,
                "conversation_subject": subject or "(no subject)",
                "conversation_url": conversation_url(thread_id),
                "from_address": from_address,
            },
        )
