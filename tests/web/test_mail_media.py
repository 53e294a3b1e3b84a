"""Images and files of a message: the image proxy (signed URLs, SSRF guard, limits, nothing of the
reader passed on), `cid:` parts, attachment downloads, and "show images" in a real Chromium.

The remote image server is a local HTTP server on loopback. The guard refuses loopback by
default (tested); the tests that fetch through it turn on `image_proxy_allow_private`, the
explicit test-only setting, rather than weakening the guard: metadata and link-local addresses
stay refused even then (tested through a redirect).
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Dialog, Page, expect
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.caller import Caller
from core.db import session_scope
from core.settings import reset_settings
from crm import auth
from crm.models import Message
from inbox_api.app import create_app
from inbox_api.routes import media
from sync.account_pass import SyncEngine
from sync.image_fetch import ImageRefused, fetch_image, sniff_image
from tests.dovecot_fixtures import MailboxUser
from tests.factories import grant, make_account, make_tenant, make_user
from tests.serving import served_app
from tests.web.browsing import chromium

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"


def png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG (so Chromium decodes it and reports its size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'


@dataclass
class ImageServer:
    url: str
    seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """The 'sender's' web server: records what each request carried."""
    server_box: list[ImageServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_box[0].seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            body, kind, status, extra = b"", "text/plain", 200, {}
            if self.path.startswith("/pixel.png"):
                body, kind = png(), "image/png"
            elif self.path == "/logo.svg":
                body, kind = SVG, "image/svg+xml"
            elif self.path == "/lying.png":  # HTML dressed up as an image
                body, kind = b"<html><script>alert(1)</script></html>", "image/png"
            elif self.path == "/big.png":
                body, kind = png() + b"\x00" * (6 * 1024 * 1024), "image/png"
            elif self.path == "/to-metadata":
                status, extra = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}
            elif self.path == "/to-pixel":
                status, extra = 302, {"Location": "/pixel.png?via=redirect"}
            else:
                status = 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_box.append(ImageServer(url=f"http://127.0.0.1:{httpd.server_address[1]}"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_box[0]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def proxy_allows_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_INBOX_IMAGE_PROXY_ALLOW_PRIVATE", "true")
    reset_settings()


# ---------------------------------------------------------------------------------------------
# The fetch behind the proxy


def test_sniffing_knows_raster_images_only() -> None:
    assert sniff_image(png()) == "image/png"
    assert sniff_image(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_image(b"GIF89a....") == "image/gif"
    assert sniff_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_image(b"\x00\x00\x00\x1cftypavif") == "image/avif"
    for other in (SVG, b"<html>", b"", b"%PDF-1.7"):
        assert sniff_image(other) is None


def test_the_guard_refuses_loopback_unless_the_test_setting_allows_it(image_server: ImageServer) -> None:
    with pytest.raises(ImageRefused, match="loopback"):
        fetch_image(f"{image_server.url}/pixel.png", allow_private=False)
    assert image_server.seen == []  # refused before connecting
    with pytest.raises(ImageRefused, match="metadata"):
        fetch_image("http://169.254.169.254/latest/meta-data/", allow_private=True)


def test_fetch_limits_and_what_the_sender_learns(image_server: ImageServer) -> None:
    fetched = fetch_image(f"{image_server.url}/pixel.png?id=42", allow_private=True)
    assert fetched.content_type == "image/png" and fetched.data == png()
    seen = image_server.seen[-1]
    assert "cookie" not in seen and "referer" not in seen and "x-forwarded-for" not in seen
    assert seen["user-agent"] == "crm-inbox-image-proxy"
    for path, reason in (
        ("/logo.svg", "not a PNG"),
        ("/lying.png", "not a PNG"),
        ("/big.png", "larger than 5 MB"),
        ("/missing.png", "answered 404"),
        ("/to-metadata", "metadata"),  # every hop goes through the guard
    ):
        with pytest.raises(ImageRefused, match=reason):
            fetch_image(f"{image_server.url}{path}", allow_private=True)
    assert fetch_image(f"{image_server.url}/to-pixel", allow_private=True).data == png()
    for url in ("ftp://127.0.0.1/x.png", "http://user:pw@127.0.0.1/x.png", "javascript:alert(1)"):
        with pytest.raises(ImageRefused):
            fetch_image(url, allow_private=True)


def test_signed_proxy_urls(sqlite_db: Engine, image_server: ImageServer, proxy_allows_loopback: None) -> None:
    client = TestClient(create_app())
    url = f"{image_server.url}/pixel.png"
    signed = media.proxy_url(url)
    response = client.get(signed)
    assert response.status_code == 200 and response.content == png()
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "set-cookie" not in response.headers
    asked = len(image_server.seen)
    # A tampered signature, another address under a valid signature, an extended expiry: refused
    # before anything is fetched.
    tampered = signed[:-2] + ("AA" if not signed.endswith("AA") else "BB")
    other = media.proxy_url(f"{image_server.url}/logo.svg").split("&e=")[0] + "&e=" + signed.split("&e=")[1]
    extended = signed.replace("&e=", "&e=9")
    for bad in (tampered, other, extended):
        assert client.get(bad).status_code == 403, bad
    assert len(image_server.seen) == asked
    # A valid signature on something that is not a raster image: refused after the fetch.
    assert client.get(media.proxy_url(f"{image_server.url}/logo.svg")).status_code == 502


# ---------------------------------------------------------------------------------------------
# A real message from Dovecot: cid image, attachments, show images


@dataclass
class Mailroom:
    db: Engine
    tenant_id: int
    admin: int
    member: int
    outsider: int
    message_pk: int
    box: MailboxUser


def _mail(remote: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Mallory <mallory@globex.test>"
    msg["To"] = "sales@acme.test"
    msg["Subject"] = "Brochure with pictures"
    msg["Message-ID"] = make_msgid(domain="globex.test")
    msg.set_content("Plain text version")
    cid = "logo@globex.test"
    msg.add_alternative(
        f'<p>Our logo:</p><img id="logo" src="cid:{cid}" alt="logo">'
        f'<p>Tracked:</p><img id="remote" src="{remote}/pixel.png?who=reader" alt="remote">',
        subtype="html",
    )
    html_part = list(msg.iter_parts())[1]
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(png(4, 4), "image", "png", cid=f"<{cid}>")
    msg.add_attachment(SVG, maintype="image", subtype="svg+xml", filename="drawing.svg")
    msg.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html", filename="page.html")
    msg.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="prix d\u00e9tail.csv")
    return msg.as_bytes()


@pytest.fixture
def mailroom(sqlite_db: Engine, mailbox_user: MailboxUser, image_server: ImageServer) -> Mailroom:
    tenant = make_tenant(sqlite_db)
    admin = make_user(sqlite_db, tenant, "admin@acme.test", is_admin=True)
    member = make_user(sqlite_db, tenant, "ann@acme.test")
    outsider = make_user(sqlite_db, tenant, "otto@acme.test")
    account = make_account(sqlite_db, tenant, mailbox_user, email="sales@acme.test")
    grant(sqlite_db, tenant, account, member)
    with session_scope(sqlite_db) as s:
        # Only the member signs in (a password hash costs time); the others use tokens.
        operator = Caller.operator(tenant)
        auth.set_password(session=s, caller=operator, user_id=member, password=SecretStr(PASSWORD))
    mailbox_user.dovecot.append(mailbox_user.name, "INBOX", _mail(image_server.url))
    summary = SyncEngine(db=sqlite_db).sync_account(account)
    assert summary.status == "ok", summary.errors
    with Session(sqlite_db) as s:
        pk = s.exec(select(Message.id)).one()
    return Mailroom(sqlite_db, tenant, admin, member, outsider, pk or 0, mailbox_user)


def _token(room: Mailroom, user_id: int) -> dict[str, str]:
    with session_scope(room.db) as s:
        created = auth.create_token(
            session=s, caller=Caller.operator(room.tenant_id), user_id=user_id, name="t"
        )
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


def test_attachments_download_as_files_and_cid_parts_show_inline(
    mailroom: Mailroom, proxy_allows_loopback: None
) -> None:
    client = TestClient(create_app())
    member = _token(mailroom, mailroom.member)
    message = client.get(f"/api/messages/{mailroom.message_pk}", headers=member).json()
    names = [a["filename"] for a in message["attachments"]]
    assert names == [None, "drawing.svg", "page.html", "prix d\u00e9tail.csv"]  # the inline logo first
    base = f"/api/messages/{mailroom.message_pk}/attachments"
    svg = client.get(f"{base}/1", headers=member)
    assert svg.status_code == 200 and svg.content == SVG
    assert svg.headers["content-type"] == "application/octet-stream"
    assert (
        svg.headers["content-disposition"]
        == "attachment; filename=\"drawing.svg\"; filename*=UTF-8''drawing.svg"
    )
    assert svg.headers["x-content-type-options"] == "nosniff"
    page = client.get(f"{base}/2", headers=member)
    assert page.content == b"<script>alert(1)</script>"
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment;")
    csv = client.get(f"{base}/3", headers=member)
    assert csv.headers["content-type"].startswith("text/csv")
    assert "filename*=UTF-8''prix%20d%C3%A9tail.csv" in csv.headers["content-disposition"]
    # A colleague without access to the account, and an index past the end: not found.
    assert client.get(f"{base}/1", headers=_token(mailroom, mailroom.outsider)).status_code == 404
    assert client.get(f"{base}/9", headers=member).status_code == 404
    assert client.get(f"{base}/1").status_code == 401

    # cid: images: parts of the message, through URLs signed for one user.
    display = client.get(f"/api/messages/{mailroom.message_pk}/display", headers=member).json()
    assert display["inline_images"] == 1 and display["remote_images"] == 1
    assert not display["images_shown"] and "pixel.png" not in display["html"]
    found = re.search(r'src="(/media/part/[^"]+)"', display["html"])
    assert found is not None, display["html"]
    part = found.group(1).replace("&amp;", "&")
    assert part.startswith(f"/media/part/{mailroom.message_pk}/0?")
    image = client.get(part)
    assert image.status_code == 200 and image.content == png(4, 4)
    assert image.headers["content-type"] == "image/png"
    # Signed for the member: the outsider's id in the same URL breaks the signature; a part that
    # is not a raster image is never served inline (even when signed).
    forged = part.replace(
        f"w={mailroom.tenant_id}.{mailroom.member}", f"w={mailroom.tenant_id}.{mailroom.outsider}"
    )
    assert client.get(forged).status_code == 403
    with Session(mailroom.db) as s:
        caller = auth.authenticate_token(session=s, token=member["Authorization"][7:])
    assert client.get(media.part_url(caller, mailroom.message_pk, 1)).status_code == 404
    outsider = Caller(tenant_id=mailroom.tenant_id, user_id=mailroom.outsider, role=caller.role)
    assert client.get(media.part_url(outsider, mailroom.message_pk, 0)).status_code == 404
    # The message's small images were kept from that one fetch: gone from the server, the logo
    # still shows, while a file that was not kept must come from the server again.
    box = mailroom.box
    box.dovecot.expunge(box.name, "INBOX", list(box.dovecot.flags(box.name, "INBOX")))
    again = client.get(part)
    assert again.status_code == 200 and again.content == png(4, 4)
    gone = client.get(f"{base}/1", headers=member)
    assert gone.status_code == 503 and "no longer on the mail server" in gone.json()["error"]["message"]
    # Shown on request: through the proxy, never the sender's address.
    shown = client.get(f"/api/messages/{mailroom.message_pk}/display?images=true", headers=member).json()
    assert shown["images_shown"] and "/media/image?u=" in shown["html"] and "127.0.0.1" not in shown["html"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


def _sign_in(page: Page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    page.locator("#threads .thread").first.wait_for()


def test_show_images_in_the_browser(
    mailroom: Mailroom, image_server: ImageServer, browser: Browser, proxy_allows_loopback: None
) -> None:
    with served_app() as base_url:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        dialogs: list[str] = []

        def on_dialog(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        _sign_in(page, base_url, "ann@acme.test")
        page.locator("#threads .thread", has_text="Brochure").click()
        bar = page.locator(".images-bar")
        bar.get_by_role("button", name="Show images", exact=True).wait_for()
        frame = page.locator("iframe.mail-frame").first.content_frame
        # The inline logo shows from the message's own part; the remote image is held.
        # (Retried: the part loads from the app's server, however long that takes.)
        expect(frame.locator('img[alt="logo"]')).to_have_js_property("naturalWidth", 4)
        assert frame.locator('img[alt="remote"]').get_attribute("src") is None
        assert image_server.seen == []
        fetched_before = len(image_server.seen)

        bar.get_by_role("button", name="Show images", exact=True).click()
        bar.get_by_role("button", name="Always show images from mallory@globex.test").wait_for()
        frame = page.locator("iframe.mail-frame").first.content_frame
        remote = frame.locator('img[alt="remote"][src]')
        # Asked of the frame's own document (cross-origin: sandboxed), retried until it loaded
        # through the proxy (which fetches it first): no fixed number of short tries.
        expect(remote).to_have_js_property("naturalWidth", 3)
        assert len(image_server.seen) > fetched_before  # the app's server fetched it
        # Chromium does not report the sandboxed frame's own requests to Playwright: the image
        # server's log is the proof that only the proxy ever asked it.
        assert {seen["user-agent"] for seen in image_server.seen} == {"crm-inbox-image-proxy"}
        seen = image_server.seen[-1]
        assert "cookie" not in seen and "referer" not in seen

        # Always for this sender: remembered for this user, across a reload.
        bar.get_by_role("button", name="Always show images from mallory@globex.test").click()
        bar.get_by_role("button", name="Ask again for mallory@globex.test").wait_for()
        page.reload()
        page.locator("#threads .thread", has_text="Brochure").click()
        page.locator(".images-bar").get_by_role("button", name="Ask again for mallory@globex.test").wait_for()
        # The attachments are listed with type and size, as downloads.
        files = page.locator(".attachments li")
        expect(files.nth(1)).to_contain_text("drawing.svg")
        expect(files.nth(1)).to_contain_text("image/svg+xml")
        with page.expect_download() as download:
            page.get_by_role("link", name="page.html").click()
        assert download.value.suggested_filename == "page.html"
        assert dialogs == []
        page.close()
