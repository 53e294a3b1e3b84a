"""`crm-inbox sending ...` and `crm-inbox notifications templates ...` end to end through the real
Typer app (its one error handler) in-process, on SQLite and PostgreSQL: the sending modes and
their refusals, a branded sender verified by the link the command queued, notification mail on
and off, and the templates read from files, checked at save time, previewed and reset."""

from __future__ import annotations

import json
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.db import session_scope
from core.types import Security
from crm.models import MailAccount, OutboundMail
from crm.outbound import senders
from crm.outbound.views import MailKind
from tests.factories import add_offline, make_tenant
from tests.test_cli_admin import invoke, ok_json, refused, refused_json


def _verification_token(db: Engine, address: str) -> str:
    with Session(db) as s:
        rows = s.exec(
            select(OutboundMail)
            .where(OutboundMail.kind == MailKind.VERIFICATION)
            .order_by(col(OutboundMail.id).desc())
        ).all()
    mail = message_from_bytes(next(r for r in rows if r.recipients == [address]).raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    body = mail.get_body(("plain",))
    assert body is not None
    found = re.search(r"/verify-sender\?token=(\S+)", body.get_content())
    assert found is not None
    return found.group(1)


def test_sending_modes_sender_verification_and_switch(db: Engine) -> None:
    tenant_id = make_tenant(db, name="Acme")
    shown = ok_json("sending", "show")
    assert shown["sending"]["mode"] == "default" and shown["pending_senders"] == []
    assert shown["sending"]["notifications_enabled"] is True
    text = invoke("sending", "show")
    assert text.exit_code == 0 and "Mode: default (the deployment's sender)" in text.stdout

    # own: needs an account, and one whose SMTP was set up.
    error = refused_json("sending", "mode", "own")
    assert error["code"] == "own_account_required"
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    error = refused_json("sending", "mode", "own", "--account", account_id)
    assert error["code"] == "smtp_not_configured"
    assert refused("sending", "mode", "own", "--account", 99999).startswith("error: ")
    with session_scope(db) as s:
        row = s.get_one(MailAccount, account_id)
        row.smtp_host, row.smtp_port, row.smtp_security = "smtp.acme.test", 587, Security.STARTTLS
    own = ok_json("sending", "mode", "own", "--account", account_id)
    assert (own["mode"], own["via"], own["effective_from"]) == ("own", "account", "sales@acme.test")
    usage = invoke("sending", "mode", "nope")  # a usage error from the parser, no traceback
    assert usage.exit_code == 2 and "Traceback" not in usage.stderr and "default" in usage.stderr

    # branded: only with a verified address; the command queues the link, resend is rate-limited.
    assert refused_json("sending", "mode", "branded")["code"] == "sender_not_verified"
    requested = ok_json("sending", "sender", "news@acme.test")
    assert requested["email"] == "news@acme.test" and requested["verified"] is False
    assert [p["email"] for p in ok_json("sending", "show")["pending_senders"]] == ["news@acme.test"]
    too_soon = refused_json("sending", "verify-resend", requested["id"])
    assert too_soon["code"] == "resend_too_soon"
    assert refused_json("sending", "verify-resend", 424242)["code"] == "sender_verification_not_found"
    with session_scope(db) as s:
        senders.confirm(session=s, token=_verification_token(db, "news@acme.test"))
    branded = ok_json("sending", "mode", "branded")
    assert (branded["mode"], branded["from_email"], branded["effective_from"]) == (
        "branded",
        "news@acme.test",
        "news@acme.test",
    )

    off = ok_json("sending", "notifications", "off")
    assert off["notifications_enabled"] is False
    assert "Notification mail: off" in invoke("sending", "show").stdout
    assert "say on or off" in refused("sending", "notifications", "maybe")
    assert ok_json("sending", "notifications", "on")["notifications_enabled"] is True


def test_notification_templates_from_files(db: Engine, tmp_path: Path) -> None:
    make_tenant(db, name="Acme")
    listed = ok_json("notifications", "templates", "list")
    assert len(listed) == 8 and not any(t["customized"] for t in listed)
    lines = invoke("notifications", "templates", "list").stdout
    assert "snooze_woke" in lines and "password_reset" in lines

    shown = ok_json("notifications", "templates", "show", "mentioned")
    assert "note_excerpt" in shown["merge_tags"] and shown["customized"] is False
    assert refused_json("notifications", "templates", "show", "nope")["code"] == "event_unknown"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"subject": "{{ nope }}", "text": "x", "html": "<p>x</p>"}))
    error = refused_json("notifications", "templates", "set", "mentioned", "--file", bad)
    assert error["code"] == "merge_tag_unknown" and error["fields"]["unknown"] == ["nope"]
    assert ok_json("notifications", "templates", "show", "mentioned")["customized"] is False

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "is not JSON" in refused("notifications", "templates", "set", "mentioned", "--file", broken)
    assert "is not a readable file" in refused(
        "notifications", "templates", "set", "mentioned", "--file", tmp_path / "missing.json"
    )

    good = tmp_path / "good.json"
    good.write_text(
        json.dumps(
            {
                "subject": "{{ actor_name }} needs you",
                "text": "{{ note_excerpt }}\n{{ conversation_url }}",
                "html": "<p>{{ note_excerpt }}</p><script>alert(1)</script>",
            }
        )
    )
    saved = ok_json("notifications", "templates", "set", "mentioned", "--file", good)
    assert saved["customized"] is True and saved["subject"] == "{{ actor_name }} needs you"
    preview = ok_json("notifications", "templates", "preview", "mentioned")
    assert preview["subject"] == "Leo Lane needs you"
    assert "@mia can you take this one?" in preview["text"] and "<script" not in preview["html"]
    text = invoke("notifications", "templates", "preview", "mentioned").stdout
    assert text.startswith("Subject: Leo Lane needs you")

    folder = tmp_path / "assigned"
    folder.mkdir()
    (folder / "subject.txt").write_text("Yours: {{ conversation_subject }}\n")
    (folder / "text.txt").write_text("{{ conversation_url }}\n")
    assert "lacks body.html" in refused("notifications", "templates", "set", "assigned", "--file", folder)
    (folder / "body.html").write_text("<p>{{ conversation_subject }}</p>")
    trial = ok_json("notifications", "templates", "preview", "assigned", "--file", folder)
    assert trial["subject"] == "Yours: Quote for 40 chairs"  # the folder's wording, not saved
    assert ok_json("notifications", "templates", "show", "assigned")["customized"] is False
    assert ok_json("notifications", "templates", "set", "assigned", "--file", folder)["customized"] is True

    reset = ok_json("notifications", "templates", "reset", "mentioned")
    assert reset["customized"] is False and reset["subject"].startswith("[{{ tenant_name }}]")
    customized = {t["event"] for t in ok_json("notifications", "templates", "list") if t["customized"]}
    assert customized == {"assigned"}
