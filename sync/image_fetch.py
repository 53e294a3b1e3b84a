"""The image proxy's fetch: a remote image, on behalf of a reader, without telling the sender who.

The address comes from a stranger's mail, so every hop goes through the SSRF guard (`netguard`:
the name resolved once, that address connected to, metadata/link-local always refused, private
and loopback unless `image_proxy_allow_private`, a test-only setting). No cookie, no Referer, no
client address or user agent of the reader is sent; a fixed user agent is. At most a few
redirects, each checked again; at most `MAX_IMAGE_BYTES`, read against a deadline so a server
trickling bytes cannot hold a worker; and only raster images, recognised by their first bytes
(never the server's Content-Type): SVG is a document that can carry scripts and references.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from core.errors import InvalidInput
from sync import errors, netguard

MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_REDIRECTS = 3
TIMEOUT_SECONDS = 10.0
USER_AGENT = "crm-inbox-image-proxy"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class ImageRefused(InvalidInput):
    """The address or its answer is not an image the proxy will pass on (code `image_refused`)."""

    def __init__(self, reason: str) -> None:
        super().__init__("image_refused", f"The image was not loaded: {reason}.", reason=reason)


@dataclass(frozen=True, slots=True)
class FetchedImage:
    content_type: str
    data: bytes = field(repr=False)


def sniff_image(data: bytes) -> str | None:
    """The raster image type of `data` from its signature, or None. Pure."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    return None


def _connection(scheme: str, host: str, address: str, port: int) -> http.client.HTTPConnection:
    if scheme == "https":
        context = netguard.pinned_context(host, None)  # the certificate is checked against the name
        return http.client.HTTPSConnection(address, port, timeout=TIMEOUT_SECONDS, context=context)
    return http.client.HTTPConnection(address, port, timeout=TIMEOUT_SECONDS)


def _read(response: http.client.HTTPResponse, max_bytes: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise ImageRefused("the server took too long")
        chunk = response.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > max_bytes:
            raise ImageRefused(f"it is larger than {max_bytes // (1024 * 1024)} MB")
        chunks.append(chunk)


def fetch_image(url: str, *, allow_private: bool, max_bytes: int = MAX_IMAGE_BYTES) -> FetchedImage:
    """GET a remote image through the guard; ImageRefused for anything but a raster image."""
    deadline = time.monotonic() + 3 * TIMEOUT_SECONDS
    for _hop in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageRefused("only http and https addresses are fetched")
        if parts.username is not None or parts.password is not None:
            raise ImageRefused("addresses with credentials are not fetched")
        try:
            host = parts.hostname.encode("idna").decode("ascii")
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except (UnicodeError, ValueError) as exc:
            raise ImageRefused("the address is not valid") from exc
        try:
            address = netguard.check_host(host, port, allow_private=allow_private)
        except (errors.BlockedHost, errors.HostNotFound) as exc:
            raise ImageRefused(str(exc.message)) from exc
        connection = _connection(parts.scheme, host, address, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(
                "GET",
                target,
                headers={
                    "Host": host if parts.port is None else f"{host}:{port}",
                    "User-Agent": USER_AGENT,
                    "Accept": "image/avif,image/webp,image/png,image/jpeg,image/gif",
                },
            )
            response = connection.getresponse()
            if response.status in _REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    raise ImageRefused("the server redirected nowhere")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise ImageRefused(f"the server answered {response.status}")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageRefused(f"it is larger than {max_bytes // (1024 * 1024)} MB")
            data = _read(response, max_bytes, deadline)
        except (OSError, http.client.HTTPException) as exc:
            raise ImageRefused("the server could not be reached") from exc
        finally:
            connection.close()
        kind = sniff_image(data)
        if kind is None:
            raise ImageRefused("it is not a PNG, JPEG, GIF, WebP or AVIF image")
        return FetchedImage(content_type=kind, data=data)
    raise ImageRefused("too many redirects")
