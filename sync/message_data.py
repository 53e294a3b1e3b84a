"""From the parser's values to what `crm.mailstore` takes: the engine's one conversion
(shared by the folder pass, forwarded-mail intake and the send queue's Sent copies), and the
rule for one Message-ID met twice in a batch."""

from __future__ import annotations

from collections.abc import Sequence

from crm import mailstore
from sync.types import ParsedMessage


def to_message_data(
    parsed: ParsedMessage, *, raw: bytes | None, headers_only: bool = False
) -> mailstore.MessageData:
    """The engine's one conversion from a parser value to what `crm.mailstore` takes."""

    def pairs(addresses: Sequence[object]) -> tuple[tuple[str, str], ...]:
        return tuple((a.email, a.name) for a in addresses)  # type: ignore[attr-defined]

    return mailstore.MessageData(
        message_id=parsed.message_id,
        message_id_synthetic=parsed.message_id_synthetic,
        content_hash=parsed.content_hash,
        subject=parsed.subject,
        normalized_subject=parsed.normalized_subject,
        date=parsed.date,
        from_email=parsed.from_.email if parsed.from_ else "",
        from_name=parsed.from_.name if parsed.from_ else "",
        to=pairs(parsed.to),
        cc=pairs(parsed.cc),
        bcc=pairs(parsed.bcc),
        reply_to=pairs(parsed.reply_to),
        in_reply_to=parsed.in_reply_to,
        references=parsed.references,
        text_body=parsed.text_body,
        html_body=parsed.html_body,
        attachments=tuple(
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "inline": a.inline,
                "content_id": a.content_id,
            }
            for a in parsed.attachments
        ),
        headers=parsed.headers,
        attached_message_senders=pairs(parsed.attached_message_senders),
        size=parsed.size,
        recipient_count=parsed.recipient_count,
        parse_errors=parsed.parse_errors,
        raw=raw,
        headers_only=headers_only,
    )


def dedupe(items: list[mailstore.Incoming]) -> list[mailstore.Incoming]:
    """Two UIDs of one batch holding the same Message-ID: the second is a known location."""
    seen: set[str] = set()
    out: list[mailstore.Incoming] = []
    for item in sorted(items, key=lambda i: i.location.uid):
        if isinstance(item, mailstore.NewMail):
            if item.data.message_id in seen:
                item = mailstore.KnownMail(location=item.location, message_id=item.data.message_id)
            seen.add(item.data.message_id if isinstance(item, mailstore.NewMail) else item.message_id)
        out.append(item)
    return out
