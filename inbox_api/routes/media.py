"""A message's images and files: the display HTML with images shown on request, the image proxy,
inline (`cid:`) parts and attachment downloads.

Mail HTML is shown in a sandboxed frame with an opaque origin, whose image requests carry no
session cookie: the frame's image addresses therefore carry their own authority, an HMAC over
what they point at and an expiry (`/media/...`, signed with a key derived from the secret key).
A proxied image is fetched by the server (SSRF guard, size and type limits, nothing of the
reader passed on); an inline part is fetched for the user the URL was signed for, whose access
is checked again. Downloads are plain API routes (cookie or token) and always attachments.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from core.caller import Caller
from core.db import session_scope
from core.errors import DomainError
from core.secrets import derived_key
from core.settings import get_settings
from crm import access, mail_media
from crm.mail_media import ImagePreference, MessageDisplay
from inbox_api.deps import CallerDep, SessionDep, caller_outside_request_session
from sync import image_fetch, message_parts

router = APIRouter(tags=["conversations"])
URL_LIFETIME_SECONDS = 3600
_SAFE_DOWNLOAD_TYPES = frozenset(
    {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain", "text/csv"}
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(*fields: str) -> str:
    key = derived_key("media-urls")
    return _b64(hmac.new(key, "\x1f".join(fields).encode("utf-8"), hashlib.sha256).digest()[:24])


def _expiry() -> int:
    # Rounded to the hour, so a message opened twice in the hour gets the same (cacheable) URLs.
    return (int(time.time()) // URL_LIFETIME_SECONDS + 2) * URL_LIFETIME_SECONDS


def _valid(signature: str, expires: int, *fields: str) -> bool:
    return expires >= time.time() and hmac.compare_digest(signature, _signature(*fields, str(expires)))


def proxy_url(url: str) -> str:
    expires = _expiry()
    return (
        f"/media/image?u={_b64(url.encode('utf-8'))}&e={expires}&s={_signature('image', url, str(expires))}"
    )


def part_url(caller: Caller, message_pk: int, index: int) -> str:
    expires = _expiry()
    who = f"{caller.tenant_id}.{caller.user_id or 0}"
    signature = _signature("part", who, str(message_pk), str(index), str(expires))
    return f"/media/part/{message_pk}/{index}?w={who}&e={expires}&s={signature}"


def _media(data: bytes, content_type: str) -> Response:
    return Response(
        data,
        media_type=content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "private, max-age=3600",
        },
    )


def _refused(status: int = 404) -> Response:
    return Response(
        "Not available",
        status_code=status,
        media_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/api/messages/{message_pk}/display",
    summary="A message's HTML for display: remote images through the image proxy when asked",
)
def display(
    message_pk: int,
    session: SessionDep,
    caller: CallerDep,
    images: Annotated[bool, Query(description="Show remote images (through the proxy)")] = False,
) -> MessageDisplay:
    return mail_media.message_display(
        session=session,
        caller=caller,
        message_pk=message_pk,
        show_images=images,
        proxy_url=proxy_url,
        part_url=lambda index: part_url(caller, message_pk, index),
    )


@router.put(
    "/api/messages/{message_pk}/sender-images",
    summary="Always show the remote images of this message's sender (for me)",
)
def always_show(message_pk: int, session: SessionDep, caller: CallerDep) -> ImagePreference:
    return mail_media.set_always_show_images(
        session=session, caller=caller, message_pk=message_pk, always=True
    )


@router.delete(
    "/api/messages/{message_pk}/sender-images",
    summary="Ask again before showing this sender's remote images (for me)",
)
def stop_showing(message_pk: int, session: SessionDep, caller: CallerDep) -> ImagePreference:
    return mail_media.set_always_show_images(
        session=session, caller=caller, message_pk=message_pk, always=False
    )


def _disposition(filename: str | None, index: int) -> str:
    name = re.sub(r"[\x00-\x1f\x7f/\\\"]", "_", filename or "") or f"attachment-{index + 1}"
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get(
    "/api/messages/{message_pk}/attachments/{index}",
    summary="Download an attachment (always as a file, fetched from the mail server)",
    response_class=Response,
)
def download(
    message_pk: int,
    index: int,
    # Resolved in a session of its own: no database session stays open while the mail server
    # is asked for the message.
    caller: Annotated[Caller, Depends(caller_outside_request_session)],
) -> Response:
    part = message_parts.fetch_part(caller=caller, message_pk=message_pk, index=index)
    declared = part.content_type.lower()
    return Response(
        part.data,
        # HTML, SVG and anything else a browser could run are bytes to save, never a page.
        media_type=declared if declared in _SAFE_DOWNLOAD_TYPES else "application/octet-stream",
        headers={
            "Content-Disposition": _disposition(part.filename, index),
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/media/image", include_in_schema=False)
def proxied_image(
    u: Annotated[str, Query(max_length=8000)],
    e: Annotated[int, Query(ge=0)],
    s: Annotated[str, Query(max_length=100)],
) -> Response:
    try:
        url = _unb64(u).decode("utf-8")
    except (binascii.Error, ValueError):
        return _refused()
    if not _valid(s, e, "image", url):
        return _refused(403)
    try:
        image = image_fetch.fetch_image(url, allow_private=get_settings().image_proxy_allow_private)
    except image_fetch.ImageRefused:
        return _refused(502)
    return _media(image.data, image.content_type)


@router.get("/media/part/{message_pk}/{index}", include_in_schema=False)
def inline_part(
    message_pk: int,
    index: int,
    w: Annotated[str, Query(pattern=r"^\d+\.\d+$")],
    e: Annotated[int, Query(ge=0)],
    s: Annotated[str, Query(max_length=100)],
) -> Response:
    if not _valid(s, e, "part", w, str(message_pk), str(index)):
        return _refused(403)
    tenant_id, user_id = (int(x) for x in w.split("."))
    try:
        with session_scope() as session:
            # The user the URL was signed for, as they are now.
            caller = access.caller_for_user(session=session, tenant_id=tenant_id, user_id=user_id)
            if not access.is_active(session, caller):
                return _refused()
        part = message_parts.fetch_part(caller=caller, message_pk=message_pk, index=index)
    except DomainError:
        return _refused()
    kind = image_fetch.sniff_image(part.data)
    if part.content_type not in mail_media.INLINE_IMAGE_TYPES or kind is None:
        return _refused()  # an inline image is a raster image, or nothing
    return _media(part.data, kind)
