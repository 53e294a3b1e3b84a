"""Daily sending limits per account (issue 10, item 9): mail waits instead of being refused.

A provider that sees an account go over its daily limit refuses further mail for up to a day and
may suspend the account; so the queue counts what each account sent over the provider's window
and holds the rest in `waiting_for_limit`, due at the moment enough of the window has passed.

Defaults, from the providers' published limits (checked 2026; editable per account):

* Gmail (consumer, @gmail.com / @googlemail.com): 500 recipients per day. Google, "Gmail
  sending limits": "Recipients per message ... 500"; "You have reached a limit for sending
  mail" after ~500 recipients in a day (support.google.com/mail/answer/22839).
* Google Workspace (any other domain through smtp.gmail.com): 2,000 messages per day per user
  (500 for trial accounts). Google Workspace Admin Help, "Gmail sending limits in Google
  Workspace" (support.google.com/a/answer/166852).
* Microsoft 365 / Exchange Online (smtp.office365.com): 10,000 recipients per day per mailbox.
  Microsoft Learn, "Exchange Online limits", Sending limits: "Recipient rate limit: 10,000
  recipients per day" (learn.microsoft.com/office365/servicedescriptions/
  exchange-online-service-description/exchange-online-limits).

Both providers count over a rolling 24 hours, not from midnight (Google: "limits are per
rolling 24-hour period"; Microsoft: the recipient rate limit is a 24-hour sliding window), so
the count here is the mail sent in the last 24 h and it "resets" continuously: a waiting mail is
due when the oldest sends that stand in its way are 24 h old.

Two workers claiming mail of one account at the same moment serialize on the account row
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite has one writer), so together they cannot overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import utcnow
from crm import access
from crm.models import LimitUnit, MailAccount, OutboundAccount, OutboundMail, OutboundState

WINDOW = timedelta(hours=24)
GMAIL_RECIPIENTS_PER_DAY = 500
WORKSPACE_MESSAGES_PER_DAY = 2_000
MICROSOFT_365_RECIPIENTS_PER_DAY = 10_000
MAX_LIMIT = 1_000_000
_CONSUMER_GOOGLE = ("gmail.com", "googlemail.com")
_COUNTED = (OutboundState.SENT, OutboundState.SENDING)


@dataclass(frozen=True, slots=True)
class Limit:
    per_day: int | None  # None: no limit
    unit: LimitUnit
    provider: str  # "gmail", "google_workspace", "microsoft_365" or "other"


@dataclass(frozen=True, slots=True)
class LimitView:
    account_id: int
    provider: str
    per_day: int | None  # the limit in force (None: none)
    unit: LimitUnit
    source: str  # "provider_default" or "custom"
    default_per_day: int | None
    default_unit: LimitUnit
    used_last_24h: int
    waiting: int  # mail held by the limit now
    next_free_at: datetime | None  # when the count next drops (None: nothing counted)


def _ends_with(host: str, *domains: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def provider_default(account: MailAccount) -> Limit:
    """The published limit of the account's provider, told by its SMTP host (or address)."""
    host = account.smtp_host or ""
    domain = account.email.rpartition("@")[2].lower()
    if domain in _CONSUMER_GOOGLE:
        return Limit(GMAIL_RECIPIENTS_PER_DAY, LimitUnit.RECIPIENTS, "gmail")
    if _ends_with(host, "gmail.com", "googlemail.com", "google.com"):
        return Limit(WORKSPACE_MESSAGES_PER_DAY, LimitUnit.MESSAGES, "google_workspace")
    if _ends_with(host, "office365.com", "outlook.com") or domain.endswith(".onmicrosoft.com"):
        return Limit(MICROSOFT_365_RECIPIENTS_PER_DAY, LimitUnit.RECIPIENTS, "microsoft_365")
    return Limit(None, LimitUnit.MESSAGES, "other")


def limit_of(session: Session, account: MailAccount) -> tuple[Limit, str]:
    default = provider_default(account)
    choice = session.get(OutboundAccount, account.id)
    if choice is None or choice.daily_limit is None:
        return default, "provider_default"
    per_day = choice.daily_limit or None  # 0: no limit
    return Limit(per_day, choice.daily_limit_unit or default.unit, default.provider), "custom"


def _weight(unit: LimitUnit, recipients: list[str]) -> int:
    return max(1, len(recipients)) if unit is LimitUnit.RECIPIENTS else 1


def _window(session: Session, account_id: int, now: datetime) -> list[tuple[datetime, list[str]]]:
    """(when, recipients) of the account's sends in the last 24 h, oldest first."""
    when = func.coalesce(col(OutboundMail.sent_at), col(OutboundMail.updated_at))
    rows = session.exec(
        select(when, OutboundMail.recipients)
        .where(
            OutboundMail.account_id == account_id,
            col(OutboundMail.state).in_(_COUNTED),
            when > now - WINDOW,
        )
        .order_by(when)
    ).all()
    return [(w, list(r)) for w, r in rows]


@dataclass(frozen=True, slots=True)
class Verdict:
    go: bool
    wait_until: datetime | None = None  # when it may go (not go)
    never: bool = False  # alone above the limit: it can never go


def check(
    session: Session, account_id: int, recipients: list[str], *, now: datetime | None = None
) -> Verdict:
    """May a mail to `recipients` leave the account now? Takes the account row's lock first."""
    now = now or utcnow()
    account = session.exec(select(MailAccount).where(MailAccount.id == account_id).with_for_update()).one()
    limit, _ = limit_of(session, account)
    if limit.per_day is None:
        return Verdict(go=True)
    need = _weight(limit.unit, recipients)
    if need > limit.per_day:
        return Verdict(go=False, never=True)
    sent = _window(session, account_id, now)
    used = sum(_weight(limit.unit, r) for _, r in sent)
    if used + need <= limit.per_day:
        return Verdict(go=True)
    # Free enough room: the oldest sends age out first.
    excess = used + need - limit.per_day
    for when, r in sent:
        excess -= _weight(limit.unit, r)
        if excess <= 0:
            return Verdict(go=False, wait_until=when + WINDOW)
    return Verdict(go=False, wait_until=now + WINDOW)  # not reached: kept for type completeness


def get_limit(*, session: Session, caller: Caller, account_id: int, now: datetime | None = None) -> LimitView:
    now = now or utcnow()
    account = access.get_account(session, caller, account_id)
    limit, source = limit_of(session, account)
    default = provider_default(account)
    sent = _window(session, account_id, now)
    waiting = session.exec(
        select(func.count())
        .select_from(OutboundMail)
        .where(OutboundMail.account_id == account_id, OutboundMail.state == OutboundState.WAITING_LIMIT)
    ).one()
    return LimitView(
        account_id=account_id,
        provider=limit.provider,
        per_day=limit.per_day,
        unit=limit.unit,
        source=source,
        default_per_day=default.per_day,
        default_unit=default.unit,
        used_last_24h=sum(_weight(limit.unit, r) for _, r in sent),
        waiting=int(waiting),
        next_free_at=sent[0][0] + WINDOW if sent else None,
    )


def set_limit(
    *,
    session: Session,
    caller: Caller,
    account_id: int,
    per_day: int | None,
    unit: LimitUnit | None = None,
    now: datetime | None = None,
) -> LimitView:
    """Set the account's limit (admins): a number, 0 for none, or None for the provider's
    default. Mail already waiting is re-decided at its next turn (made due at once)."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "change an account's daily sending limit")
    if per_day is not None and not 0 <= per_day <= MAX_LIMIT:
        raise InvalidInput(
            "daily_limit_invalid",
            f"The daily limit is between 0 (none) and {MAX_LIMIT}.",
            field="per_day",
            per_day=per_day,
        )
    choice = session.get(OutboundAccount, account.id) or OutboundAccount(account_id=account.id or 0)
    choice.daily_limit = per_day
    choice.daily_limit_unit = unit if per_day is not None else None
    session.add(choice)
    now = now or utcnow()
    for row in session.exec(
        select(OutboundMail).where(
            OutboundMail.account_id == account_id, OutboundMail.state == OutboundState.WAITING_LIMIT
        )
    ):
        row.next_attempt_at = now
        session.add(row)
    session.flush()
    return get_limit(session=session, caller=caller, account_id=account_id, now=now)
