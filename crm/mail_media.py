"""What a reader sees of a message's images and files, beyond the held-back display HTML.

- Remote images stay held back until the reader asks to see them for one message, or always for
  a sender (a per-user choice stored here). Even then the browser never contacts the sender's
  server: each image address is handed to `proxy_url` (the face signs it for its own image
  proxy), so the sender learns neither the reader's address nor when the mail was read.
- `cid:` images point at the message's own parts (`part_url`, also signed by the face).
- Attachments are not stored (only their facts): `part_source` says where the message can be
  fetched again from the mail server, for the accounts the caller sees. The fetch is network
  I/O and lives in sync (`sync.message_parts`).

No HTTP here: the face passes the two URL makers.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

import signatures
from core.caller import Caller
from core.errors import InvalidInput, not_found
from core.types import Security, UidState
from crm import access
from crm.models import FolderState, ImageSender, ImapUid, MailAccount, Message

_IMG_TAG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
# sanitize_mail_html's serializer always writes double-quoted attributes.
_SRC = re.compile(r'\ssrc="([^"]*)"', re.IGNORECASE)
# Images a browser may show from a part; SVG is a document (scripts, remote references).
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif"})


@dataclass(frozen=True, slots=True)
class MessageDisplay:
    message_pk: int
    html: str  # sanitized; remote images held back or pointing at the proxy
    remote_images: int  # images that would load from the sender's servers
    images_shown: bool  # remote images point at the image proxy
    inline_images: int  # cid: images pointing at the message's own parts
    sender: str | None
    sender_always: bool  # the caller always shows this sender's images


@dataclass(frozen=True, slots=True)
class ImagePreference:
    sender: str
    always: bool


@dataclass(frozen=True, slots=True)
class PartLocation:
    """Where one copy of a message lives, with what it takes to log in (never leaves sync)."""

    account_id: int
    host: str
    port: int
    security: Security
    username: str
    ca_file: str | None
    folder: str
    uidvalidity: int
    uid: int
    secret_encrypted: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PartSource:
    message_pk: int
    index: int
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    raw: bytes | None = field(repr=False)  # malformed mail keeps its bytes: no server needed
    locations: tuple[PartLocation, ...] = ()


def _sender(message: Message) -> str | None:
    return message.from_email.strip().lower() or None


def _always(session: Session, caller: Caller, sender: str | None) -> bool:
    if sender is None or caller.user_id is None:
        return False
    return (
        session.exec(
            select(ImageSender.id).where(
                ImageSender.user_id == caller.user_id,
                ImageSender.tenant_id == caller.tenant_id,
                ImageSender.sender_email == sender,
            )
        ).first()
        is not None
    )


def _cid_index(message: Message, cid: str) -> int | None:
    wanted = cid.strip().strip("<>").lower()
    for index, part in enumerate(message.attachments):
        content_id = str(part.get("content_id") or "").strip("<>").lower()
        if content_id and content_id == wanted and str(part.get("content_type", "")) in INLINE_IMAGE_TYPES:
            return index
    return None


def rewrite_images(
    clean_html: str, proxy_url: Callable[[str], str] | None, inline_url: Callable[[str], str | None]
) -> tuple[str, int, int]:
    """Point the images of sanitized HTML at the app: remote ones at `proxy_url` (held back
    when None), `cid:` ones at `inline_url` (held back when it has no such part). Returns the
    HTML, how many remote and how many inline images it has."""
    remote = inline = 0

    def rewrite(match: re.Match[str]) -> str:
        nonlocal remote, inline
        tag = match.group(0)
        src = _SRC.search(tag)
        if src is None:
            return tag
        url = html.unescape(src.group(1)).strip()
        target: str | None
        if url.lower().startswith("cid:"):
            target = inline_url(url[4:])
            if target is None:
                return tag[: src.start()] + ' data-held="missing-part"' + tag[src.end() :]
            inline += 1
        else:
            remote += 1
            if proxy_url is None:
                return tag[: src.start()] + ' data-held="remote"' + tag[src.end() :]
            target = proxy_url(url)
        return tag[: src.start()] + f' src="{html.escape(target, quote=True)}"' + tag[src.end() :]

    return _IMG_TAG.sub(rewrite, clean_html), remote, inline


def message_display(
    *,
    session: Session,
    caller: Caller,
    message_pk: int,
    show_images: bool,
    proxy_url: Callable[[str], str],
    part_url: Callable[[int], str],
) -> MessageDisplay:
    """The message's HTML for display: remote images shown through `proxy_url` when asked
    (`show_images`) or when the caller always shows this sender's; `cid:` images through
    `part_url(attachment index)`."""
    message = access.get_message(session, caller, message_pk)
    sender = _sender(message)
    always = _always(session, caller, sender)
    show = show_images or always
    clean = signatures.sanitize_mail_html(message.html_body) if message.html_body else ""

    def inline_url(cid: str) -> str | None:
        index = _cid_index(message, cid)
        return None if index is None else part_url(index)

    shown, remote, inline = rewrite_images(clean, proxy_url if show else None, inline_url)
    return MessageDisplay(
        message_pk=message_pk,
        html=shown,
        remote_images=remote,
        images_shown=show and remote > 0,
        inline_images=inline,
        sender=sender,
        sender_always=always,
    )


def set_always_show_images(
    *, session: Session, caller: Caller, message_pk: int, always: bool
) -> ImagePreference:
    """Always (or no longer) show the remote images of this message's sender, for the caller."""
    message = access.get_message(session, caller, message_pk)
    sender = _sender(message)
    if sender is None:
        raise InvalidInput("no_sender", "This message has no sender to remember.", field="message_pk")
    if caller.user_id is None:
        raise InvalidInput("no_user", "Only a signed-in user has image preferences.", field="message_pk")
    row = session.exec(
        select(ImageSender).where(ImageSender.user_id == caller.user_id, ImageSender.sender_email == sender)
    ).first()
    if always and row is None:
        session.add(ImageSender(tenant_id=caller.tenant_id, user_id=caller.user_id, sender_email=sender))
        session.flush()
    elif not always and row is not None:
        session.delete(row)
        session.flush()
    return ImagePreference(sender=sender, always=always)


def part_source(*, session: Session, caller: Caller, message_pk: int, index: int) -> PartSource:
    """An attachment's facts and where its message can be fetched from (the caller's accounts
    only, copies still on the server)."""
    message = access.get_message(session, caller, message_pk)
    if not 0 <= index < len(message.attachments):
        raise not_found("attachment", index)
    part = message.attachments[index]
    rows = session.exec(
        select(ImapUid, FolderState, MailAccount)
        .join(FolderState, col(FolderState.id) == col(ImapUid.folder_id))
        .join(MailAccount, col(MailAccount.id) == col(ImapUid.account_id))
        .where(
            ImapUid.message_pk == message_pk,
            ImapUid.state == UidState.STORED,
            col(ImapUid.expunged_at).is_(None),
            col(ImapUid.account_id).in_(access.visible_account_ids(caller)),
        )
        .order_by(col(ImapUid.id))
    ).all()
    return PartSource(
        message_pk=message_pk,
        index=index,
        filename=part.get("filename"),
        content_type=str(part.get("content_type", "application/octet-stream")),
        size=int(part.get("size", 0)),
        content_id=part.get("content_id"),
        raw=message.raw,
        locations=tuple(
            PartLocation(
                account_id=account.id or 0,
                host=account.imap_host,
                port=account.imap_port,
                security=account.imap_security,
                username=account.username,
                ca_file=account.ca_file,
                folder=folder.name,
                uidvalidity=uid.uidvalidity,
                uid=uid.uid,
                secret_encrypted=account.secret_encrypted,
            )
            for uid, folder, account in rows
        ),
    )
