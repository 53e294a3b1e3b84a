"""The message rows a sync batch writes, as threading, linking and assignment read them.

A plain slotted object instead of the `Message` SQLModel: building and flushing 200 ORM
instances per batch cost about a millisecond per message (pydantic validation, attribute
instrumentation, the unit of work), more than parsing. The rows are written with one Core
`executemany`; these objects carry what the rest of the batch needs to read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from core.types import Direction
from crm.models import Message


@dataclass(slots=True)
class StoredMessage:
    tenant_id: int
    message_id: str
    date: datetime | None
    normalized_subject: str
    participants_key: str
    direction: Direction
    from_email: str
    from_name: str
    to_addrs: list[dict[str, str]]
    cc_addrs: list[dict[str, str]]
    bcc_addrs: list[dict[str, str]]
    headers: dict[str, str]
    text_body: str
    attached_message_senders: list[dict[str, str]]
    id: int | None = None
    thread_id: int | None = None
    attributed_user_id: int | None = None


# What linking and assignment accept: rows of this batch, or messages loaded through the ORM.
MailRow = Message | StoredMessage
