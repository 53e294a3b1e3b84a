"""Our Message-IDs carry an HMAC, so a reply that references one can be recognised as an answer
to mail we sent, and a forged reference (someone writing `In-Reply-To: <...@acme.test>` by hand)
is not trusted: `<{nonce}.{mac}@{domain}>`, the mac an HMAC-SHA256 of the nonce and domain under
a per-tenant key, cut to 80 bits (enough against forgery by guessing; the id stays short).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlmodel import Session

from crm.models import MessageIdKey

_OURS = re.compile(r"^<([A-Za-z0-9_-]{16,64})\.([0-9a-f]{20})@([A-Za-z0-9.-]+)>$")


def _key(session: Session, tenant_id: int) -> bytes:
    row = session.get(MessageIdKey, tenant_id)
    if row is None:
        row = MessageIdKey(tenant_id=tenant_id, key=secrets.token_hex(32))
        session.add(row)
        session.flush()
    return bytes.fromhex(row.key)


def tenant_key(session: Session, tenant_id: int) -> bytes:
    """The tenant's key, for other MACs of ours (domain-separated by their input)."""
    return _key(session, tenant_id)


def _mac(key: bytes, nonce: str, domain: str) -> str:
    return hmac.new(key, f"{nonce}@{domain.lower()}".encode(), hashlib.sha256).hexdigest()[:20]


def new_message_id(*, session: Session, tenant_id: int, domain: str) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"<{nonce}.{_mac(_key(session, tenant_id), nonce, domain)}@{domain.lower()}>"


def is_our_message_id(*, session: Session, tenant_id: int, message_id: str) -> bool:
    """Whether a Message-ID was minted by this tenant (checked in constant time)."""
    match = _OURS.match(message_id.strip())
    if match is None or session.get(MessageIdKey, tenant_id) is None:
        return False
    nonce, mac, domain = match.groups()
    return hmac.compare_digest(mac, _mac(_key(session, tenant_id), nonce, domain))
