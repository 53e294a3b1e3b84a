"""Pure decisions about mail arriving at a hosted forwarding address: who wrote it, whether it
may start a conversation, whether it is a provider's forwarding confirmation.

Why crediting matters: a team forwards its shared address (sales@acme) to its hosted address,
or someone forwards a customer's mail by hand. Either way the customer who wrote the mail is
who the conversation is with; the forwarder is recorded beside it, never credited.

How a forward shows itself
    * automatic forwards keep the original headers (From is already the customer) and add
      `Resent-*` (RFC 5322 3.6.6), `X-Forwarded-For` (Gmail), `Delivered-To`, or come with an
      envelope sender that is not the From; mailing lists and Google Groups that rewrite From
      keep the author in `X-Original-From`;
    * manual forwards are written by one of us (a user, an own domain, a connected account) or
      carry a forward subject prefix, with the original either attached (message/rfc822: the
      parser reports its From) or pasted inline (the header block `crm.rules.forwards` reads).
A forward whose original cannot be found stays credited to the forwarder, flagged.

Everything here works on values already bounded by the parser (header values, the text body
`crm.rules.forwards` caps itself); regular expressions only run on capped strings.
"""

from __future__ import annotations

import enum
import re
import secrets
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses

from crm.rules.addresses import checked_address
from crm.rules.forwards import find_forwarded_senders

__all__ = [
    "Confirmation",
    "Credit",
    "CreditKind",
    "Ignore",
    "clean_local_part",
    "credit_sender",
    "find_confirmation",
    "ignore_reason",
    "is_forward_subject",
    "new_suffix",
]

_MAX_VALUE = 2_000
_FORWARD_PREFIXES = ("fwd", "fw", "tr", "wg", "rv", "enc", "i", "doorst", "vs", "vb", "fs")
_LOCAL_RE = re.compile(r"[^a-z0-9]+")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def new_suffix(length: int = 6) -> str:
    """The unguessable part of an address (36^6 ~ 2e9 per local part): nobody can write to a
    team's inbox by guessing `sales@`."""
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(length))


def clean_local_part(value: str) -> str:
    """A readable local part from a team name: "Sales EMEA" -> "sales-emea" (at most 40)."""
    return _LOCAL_RE.sub("-", value.strip().lower()).strip("-")[:40].strip("-")


class CreditKind(enum.StrEnum):
    DIRECT = "direct"  # written to the address (or an automatic forward without markers)
    AUTOMATIC = "automatic"  # a forwarding rule; the original headers are kept
    ORIGINAL_FROM = "original_from"  # a list or group rewrote From; X-Original-From kept
    ATTACHED = "attached"  # forwarded as an attachment (message/rfc822)
    INLINE = "inline"  # forwarded inline (a header block in the body)
    UNATTRIBUTED = "unattributed"  # looks forwarded, original sender not found: flagged


@dataclass(frozen=True, slots=True)
class Credit:
    email: str
    name: str
    kind: CreditKind
    forwarded_by: str | None = None

    @property
    def rewritten(self) -> bool:
        """The stored From differs from the message's own From header."""
        return self.kind in (CreditKind.ORIGINAL_FROM, CreditKind.ATTACHED, CreditKind.INLINE)


def _values(headers: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [v[:_MAX_VALUE] for k, v in headers if k.strip().lower() == name]


def _addresses(values: Sequence[str]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for name, raw in getaddresses(list(values)):
        email = checked_address(raw)
        if email:
            found.append((email, name.strip()))
    return found


def _first_address(values: Sequence[str]) -> str | None:
    found = _addresses(values)
    return found[0][0] if found else None


def is_forward_subject(subject: str) -> bool:
    head = subject.strip().lower()[:40]
    prefix, colon, _ = head.partition(":")
    return bool(colon) and prefix.strip().strip("[]") in _FORWARD_PREFIXES


def credit_sender(
    *,
    headers: Sequence[tuple[str, str]],
    from_: tuple[str, str] | None,
    envelope_from: str,
    subject: str,
    text_body: str,
    attached_senders: Sequence[tuple[str, str]],
    is_own: Callable[[str], bool],
    channel_addresses: frozenset[str],
    hosted_address: str,
) -> Credit:
    """Who a message arriving at a forwarding address is credited to (see the module docstring).

    `headers`: all top-level header fields (name, value); `is_own`: our users, own domains and
    connected accounts; `channel_addresses`: the hosted address and the team's original one,
    `hosted_address` the former alone."""
    sender_email, sender_name = from_ if from_ else ("", "")
    sender_email = sender_email.lower()

    original = _addresses(_values(headers, "x-original-from"))
    if original and original[0][0] != sender_email:
        return Credit(original[0][0], original[0][1], CreditKind.ORIGINAL_FROM, sender_email or None)

    forwarder = (
        _first_address(_values(headers, "resent-from"))
        or _first_address(_values(headers, "resent-sender"))
        or _first_address([v.split()[0] for v in _values(headers, "x-forwarded-for") if v.split()])
    )
    own_sender = bool(sender_email) and is_own(sender_email) and sender_email not in channel_addresses
    if forwarder and not own_sender:
        return Credit(sender_email, sender_name, CreditKind.AUTOMATIC, forwarder)

    if own_sender or is_forward_subject(subject):
        candidates = [*attached_senders]
        kind_of = {e.lower(): CreditKind.ATTACHED for e, _ in attached_senders}
        for email, name in find_forwarded_senders(text_body):
            kind_of.setdefault(email.lower(), CreditKind.INLINE)
            candidates.append((email, name))
        for email, name in candidates:
            email = email.lower()
            if email and email != sender_email and not is_own(email) and email not in channel_addresses:
                return Credit(email, name, kind_of[email], sender_email or None)
        if is_forward_subject(subject) or attached_senders:
            return Credit(sender_email, sender_name, CreditKind.UNATTRIBUTED, sender_email or None)
        return Credit(sender_email, sender_name, CreditKind.DIRECT, None)

    # Forwarded by a rule that left no header of its own: the mail was delivered to another of
    # our addresses first, or its envelope sender is someone else (SRS or the forwarder).
    delivered = [a for a in (_first_address([v]) for v in _values(headers, "delivered-to")) if a]
    hop = next((a for a in delivered if a != hosted_address), None)
    if hop is not None:
        return Credit(sender_email, sender_name, CreditKind.AUTOMATIC, hop)
    envelope = envelope_from.strip().lower()
    if envelope and sender_email and envelope != sender_email and is_own(envelope):
        return Credit(sender_email, sender_name, CreditKind.AUTOMATIC, envelope)
    return Credit(sender_email, sender_name, CreditKind.DIRECT, None)


# ----------------------------------------------------------------------- never a conversation


class Ignore(enum.StrEnum):
    BOUNCE = "bounce"
    AUTOMATED = "automated"
    OWN_MAIL = "own_mail"


_AUTO_LOCALS = frozenset({"mailerdaemon", "postmaster"})


def ignore_reason(
    *,
    headers: Sequence[tuple[str, str]],
    envelope_from: str,
    from_email: str,
    content_type: str,
    channel_addresses: frozenset[str],
    ours: bool,
) -> tuple[Ignore, str] | None:
    """Why this mail must never start a conversation or a ticket, if it must not.

    Bounces: the null reverse-path (RFC 5321 4.5.5) or a delivery status report (RFC 3464).
    Automated: Auto-Submitted other than "no" (RFC 3834), X-Autoreply/X-Autorespond,
    Precedence auto_reply. Own: our own outgoing mail coming back (`ours`: its Message-ID is
    one we made), or mail from the channel's own addresses. Mailing-list headers are *not* a
    reason: a Google Group forwarding to us carries List-Id on every customer mail."""
    ctype = content_type.lower()
    if not envelope_from.strip() or ("multipart/report" in ctype and "delivery-status" in ctype):
        return Ignore.BOUNCE, "a bounce (null sender or delivery status notification)"
    local = from_email.lower().rpartition("@")[0].replace("-", "").replace("_", "").replace(".", "")
    if local in _AUTO_LOCALS:
        return Ignore.BOUNCE, f"a notification from {from_email}"
    for name, value in headers:
        key = name.strip().lower()
        folded = value.strip().lower()[:200]
        if key == "auto-submitted" and folded.partition(";")[0].strip() not in ("", "no"):
            return Ignore.AUTOMATED, f"Auto-Submitted: {folded}"
        if key in ("x-autoreply", "x-autorespond"):
            return Ignore.AUTOMATED, f"{name}: {folded}"
        if key == "precedence" and folded == "auto_reply":
            return Ignore.AUTOMATED, "Precedence: auto_reply"
    if ours:
        return Ignore.OWN_MAIL, "our own outgoing mail came back"
    if from_email.lower() in channel_addresses:
        return Ignore.OWN_MAIL, f"mail from the channel's own address {from_email}"
    return None


# ------------------------------------------------------------ provider confirmation messages


@dataclass(frozen=True, slots=True)
class Confirmation:
    provider: str  # "gmail" | "outlook"
    code: str | None
    link: str | None
    requested_by: str | None


_URL_RE = re.compile(r"https://[^\s<>\"')\]]{1,1500}")
_GMAIL_CODE_RE = re.compile(r"\(#(\d{4,12})\)")
_CODE_LINE_RE = re.compile(
    r"(?:code|código|code de confirmation|bestätigungscode)\s*[:：]\s*([A-Za-z0-9-]{4,16})", re.I
)
_FROM_SUBJECT_RE = re.compile(r"from\s+(\S+@\S+)", re.I)
_OUTLOOK_SENDERS = ("microsoft.com", "outlook.com", "office365.com", "microsoftonline.com")
_OUTLOOK_WORDS = ("forward", "verify", "confirm", "transf", "weiterleit", "reenv")


def find_confirmation(*, from_email: str, subject: str, text_body: str) -> Confirmation | None:
    """A provider's "confirm forwarding to this address" message (Gmail: a code in the subject
    and the body, and a link to click; Outlook / Microsoft 365: a code or a link), with what an
    admin needs to finish the setup without access to the mailbox."""
    sender = from_email.lower()
    body = text_body[:20_000]
    subject = subject[:500]
    if sender == "forwarding-noreply@google.com":
        code = _GMAIL_CODE_RE.search(subject) or _CODE_LINE_RE.search(body)
        link = next(
            (u for u in _URL_RE.findall(body) if "mail-settings.google.com" in u or "mail.google.com" in u),
            None,
        )
        who = _FROM_SUBJECT_RE.search(subject)
        return Confirmation("gmail", code.group(1) if code else None, link, who.group(1) if who else None)
    domain = sender.rpartition("@")[2]
    if any(domain == d or domain.endswith("." + d) for d in _OUTLOOK_SENDERS) and any(
        w in subject.lower() for w in _OUTLOOK_WORDS
    ):
        code = _CODE_LINE_RE.search(body)
        link = next(
            (u for u in _URL_RE.findall(body) if "microsoft" in u or "live.com" in u or "outlook" in u), None
        )
        if code or link:
            who = _FROM_SUBJECT_RE.search(subject)
            return Confirmation(
                "outlook", code.group(1) if code else None, link, who.group(1) if who else None
            )
    return None
