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

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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
    Tenant,
    TenantMailSettings,
    Thread,
    User,
)
from crm.outbound import system_mail

# The templates' half lives in `notification_templates`; the faces reach both through here.
from crm.outbound.notification_templates import (
    ALWAYS_SENT as ALWAYS_SENT,
    MAX_TEMPLATE as MAX_TEMPLATE,
    TAGS as TAGS,
    Event as Event,
    Rendered as Rendered,
    TemplateView as TemplateView,
    Wording as Wording,
    event_of as event_of,
    get_template as get_template,
    list_templates as list_templates,
    preview as preview,
    render_wording as render_wording,
    reset_template as reset_template,
    save_template as save_template,
    wording_of as wording_of,
)
from crm.outbound.views import OutboundView

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
    which = event_of(event)
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
