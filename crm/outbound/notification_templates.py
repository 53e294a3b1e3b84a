"""Notification templates (issue 10, item 8): the events, their built-in wording and merge tags,
a tenant's overrides (checked when saved: syntax, unknown tags, a trial render), and rendering
in jinja2's immutable sandbox, the HTML autoescaped and then cleaned by the signature
sanitizer's rules. Who gets which mail, and when, is `crm.outbound.notifications`."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from core.caller import Caller
from core.errors import InvalidInput
from core.types import utcnow
from crm import access
from crm.models import NotificationTemplate, Tenant
from crm.outbound.headers import check_header

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment

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


@functools.cache
def _env(*, html: bool) -> ImmutableSandboxedEnvironment:
    """The sandbox, made at first use: jinja2 and the sanitizer (bleach, html5lib) are a fifth
    of `crm-inbox sync`'s start-up and ~6 MiB, and a sync renders a notification only when a
    new conversation has watchers."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(autoescape=html, undefined=StrictUndefined)


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


def event_of(value: str) -> Event:
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
    from jinja2 import TemplateError, meta

    if len(source) > MAX_TEMPLATE:
        raise InvalidInput("template_too_long", f"The {field} is too long.", field=field)
    try:
        parsed = _env(html=False).parse(source)
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
    return _env(html=html).from_string(source)


def render_wording(wording: Wording, values: dict[str, Any]) -> Rendered:
    from jinja2 import TemplateError

    from signatures.sanitize import sanitize_rendered_signature_html

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
    which = event_of(event)
    wording, custom = wording_of(session, caller.tenant_id, which)
    return TemplateView(which, wording.subject, wording.text, wording.html, TAGS[which], custom)


def save_template(
    *, session: Session, caller: Caller, event: str, subject: str, text: str, html: str
) -> TemplateView:
    """A tenant's wording of an event; unknown merge tags and bad syntax are refused here."""
    access.require_admin(caller, "change notification templates")
    which = event_of(event)
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
    which = event_of(event)
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
    which = event_of(event)
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
