"""The admin and account commands end to end, through the real `crm-inbox` Typer app (with its
one error handler) in-process, on SQLite and PostgreSQL (connection checks: the real Dovecot)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select
from typer.testing import CliRunner, Result

from core.caller import Caller
from core.db import session_scope
from core.types import Security
from crm import signature_service
from crm.models import MailAccount
from crm_inbox.cli import admin as cli_admin, app as APP
from tests.dovecot_fixtures import MailboxUser
from tests.factories import add_offline, make_account, make_tenant, make_user
from tests.outbound.smtp import recording_smtp
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER


def invoke(*args: Any, input: str | None = None) -> Result:
    return CliRunner().invoke(APP, [str(a) for a in args], input=input)


def flat(text: str) -> str:
    """Rich wraps stderr at the console width; compare sentences on collapsed whitespace."""
    return " ".join(text.split())


def ok_json(*args: Any, input: str | None = None) -> Any:
    result = invoke(*args, "--json", input=input)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def refused(*args: Any, input: str | None = None) -> str:
    result = invoke(*args, input=input)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    return flat(result.stderr)


def refused_json(*args: Any, input: str | None = None) -> dict[str, Any]:
    """With --json a refusal is also a JSON error object on stdout (code, kind, message, fields)."""
    result = invoke(*args, "--json", input=input)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert flat(result.stderr).startswith("error: ")
    error: dict[str, Any] = json.loads(result.stdout)["error"]
    return error


def test_tenant_quota_and_account_lifecycle(db: Engine) -> None:
    tenant_id = make_tenant(db, name="Acme", quota=1)
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    assert ok_json("tenant", "show", tenant_id) == {
        "id": tenant_id,
        "name": "Acme",
        "account_quota": 1,
        "active_accounts": 1,
        "inactive_accounts": 0,
        "users": 0,
    }
    deactivated = ok_json("account", "deactivate", account_id)
    assert deactivated["active"] is False and deactivated["deactivated_at"]
    add_offline(db, tenant_id, "support@acme.test")  # the deactivated one frees its slot

    message = refused("account", "activate", account_id)
    assert message.startswith("error: The plan of Acme allows 1 active mail account(s) and 1 are in use.")
    assert "hint: deactivate an account" in message and "crm-inbox tenant quota" in message
    error = refused_json("account", "activate", account_id)
    assert (error["code"], error["kind"], error["fields"]) == (
        "quota_exceeded",
        "conflict",
        {"quota": 1, "used": 1},
    )

    lowered = invoke("tenant", "quota", tenant_id, 0)
    assert lowered.exit_code == 0
    assert "more than the new quota" in flat(lowered.stderr)
    assert "1 of 0 mail accounts active, 1 deactivated" in flat(lowered.stdout)
    assert ok_json("tenant", "quota", tenant_id, 2)["account_quota"] == 2
    assert ok_json("account", "activate", account_id)["active"] is True
    assert "must be 0 or more" in refused("tenant", "quota", tenant_id, "--", -1)
    assert "No tenant with id 999" in refused("tenant", "quota", 999, 3)
    assert refused_json("tenant", "quota", 999, 3)["code"] == "tenant_not_found"


def test_account_delete_refused_then_allowed(db: Engine) -> None:
    tenant_id = make_tenant(db)
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    make_user(db, tenant_id, "ann@acme.test")
    assert ok_json("access", "grant", account_id, "ann@acme.test")["granted"] is True
    message = refused("account", "delete", account_id)
    assert "cannot be deleted: 1 user(s) have access to it (ann@acme.test)" in message
    assert "Deactivate it instead" in message
    assert f"hint: deactivate it instead: crm-inbox account deactivate {account_id}" in message
    assert ok_json("access", "revoke", account_id, "ann@acme.test")["granted"] is False
    assert ok_json("account", "delete", account_id) == {"id": account_id, "deleted": True}
    assert f"No account with id {account_id}" in refused("account", "delete", account_id)


def test_access_default_account(db: Engine) -> None:
    tenant_id = make_tenant(db)
    shared = add_offline(db, tenant_id, "sales@acme.test")
    other = add_offline(db, tenant_id, "support@acme.test")
    user_id = make_user(db, tenant_id, "ann@acme.test")
    ok_json("access", "grant", shared, user_id)
    no_access = refused("access", "default", "ann@acme.test", other)
    assert "ann@acme.test has no access to support@acme.test" in no_access
    assert f"hint: grant access first: crm-inbox access grant {other} {user_id}" in no_access
    assert ok_json("access", "default", "ann@acme.test", shared)["default_account_id"] == shared
    listing = ok_json("access", "list", "ann@acme.test")
    assert listing["default_account_id"] == shared
    assert [a["email"] for a in listing["accounts"]] == ["sales@acme.test"]
    assert ok_json("access", "default", "ann@acme.test", "--clear")["default_account_id"] is None
    usage = invoke("access", "default", "ann@acme.test")
    assert usage.exit_code == 2 and "either an ACCOUNT_ID or --clear" in flat(usage.stderr)
    assert "No user with e-mail nobody@acme.test" in refused("access", "grant", shared, "nobody@acme.test")


def test_account_test_and_edit_against_dovecot(
    db: Engine, mailbox_user: MailboxUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user)
    tested = ok_json("account", "test", account_id)
    assert tested["ok"] is True and tested["inbox"] == "INBOX"

    monkeypatch.setenv("NEW_PW", "wrong-Password-31")
    message = refused("account", "edit", account_id, "--password-env", "NEW_PW")
    assert message.startswith(f"error: Authentication failed for {mailbox_user.name} on 127.0.0.1")
    assert "Nothing was saved" in message and "wrong-Password-31" not in message
    assert "hint: fix the settings, or save anyway with --force" in message

    renamed = ok_json("account", "edit", account_id, "--display-name", "Sales")
    assert (renamed["display_name"], renamed["check"]) == ("Sales", "not needed")

    forced = invoke("account", "edit", account_id, "--password-stdin", "--force", input="wrong-Password-31\n")
    assert forced.exit_code == 0, forced.stderr
    assert "saved despite a failing check: Authentication failed" in flat(forced.stderr)
    failing = invoke("account", "test", account_id)
    assert failing.exit_code == 1
    assert "Authentication failed" in flat(failing.stderr) and "wrong-Password-31" not in failing.stderr

    fixed = invoke("account", "edit", account_id, "--password-stdin", input=f"{mailbox_user.password}\n")
    assert fixed.exit_code == 0, fixed.stderr
    assert "Check: Logged in; INBOX found" in flat(fixed.stdout)
    with session_scope(db) as session:
        assert session.get_one(MailAccount, account_id).display_name == "Sales"
    assert ok_json("account", "test", account_id)["ok"] is True


def test_signature_commands(db: Engine, tmp_path: Path) -> None:
    tenant_id = make_tenant(db, name="Acme GmbH")
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    user_id = make_user(db, tenant_id, "ann@acme.test", first_name="Ann", last_name="Lee", job_title="CEO")
    ok_json("access", "grant", account_id, user_id)

    formal = tmp_path / "formal.html"
    formal.write_text(
        "<p><b>{{ sender.full_name }}</b>, {{ sender.job_title }} – {{ company.name }}</p><script>x</script>"
    )
    added = ok_json("signature", "add", account_id, "--name", "Formal", "--html-file", formal)
    assert (
        added["html"] == "<p><b>{{ sender.full_name }}</b>, {{ sender.job_title }} – {{ company.name }}</p>"
    )
    assert added["warnings"] == []

    logo = invoke(
        "signature", "add", account_id, "--name", "Logo", "--html-file", "-",
        input='<img src="https://acme.test/logo.svg" alt="Acme">',
    )  # fmt: skip
    assert logo.exit_code == 0, logo.stderr
    assert "warning: The signature links an SVG image" in flat(logo.stderr)

    svg = refused("signature", "add", account_id, "--name", "Inline", "--html-file", "-", input="<svg></svg>")
    assert "Inline SVG graphics cannot be used in a signature" in svg
    unknown = refused(
        "signature", "add", account_id, "--name", "T", "--html-file", "-", input="{{ sender.age }}"
    )
    assert "unknown merge tag {{ sender.age }}" in unknown and "{{ sender.first_name }}" in unknown

    ok_json(
        "signature",
        "add",
        account_id,
        "--name",
        "Short",
        "--html-file",
        "-",
        input="<p>{{ sender.first_name }}</p>",
    )
    fourth = refused("signature", "add", account_id, "--name", "Four", "--html-file", "-", input="<p>4</p>")
    assert "already has 3 signatures, the most an account can have" in fourth
    assert "hint: edit (crm-inbox signature edit) or delete" in fourth
    missing = invoke("signature", "add", account_id, "--name", "X")
    assert missing.exit_code == 2 and "--html-file" in flat(missing.stderr)

    listed = ok_json("signature", "list", account_id)
    assert [s["name"] for s in listed] == ["Formal", "Logo", "Short"]
    rendered = ok_json("signature", "render", added["id"], "--user", "ann@acme.test")
    assert rendered["html"] == "<p><b>Ann Lee</b>, CEO – Acme GmbH</p>"
    assert rendered["text"] == "Ann Lee, CEO – Acme GmbH"

    assert (
        ok_json("signature", "default", account_id, added["id"], "--user", "ann@acme.test")["signature_id"]
        == added["id"]
    )
    with session_scope(db) as session:
        defaults = signature_service.compose_defaults(
            session=session, caller=Caller.operator(tenant_id), user_id=user_id, account_id=account_id
        )
    assert defaults.rendered is not None and defaults.rendered.text == "Ann Lee, CEO – Acme GmbH"
    foreign = refused("signature", "default", account_id, 12345, "--user", "ann@acme.test")
    assert f"Signature 12345 is not a signature of account {account_id}" in foreign

    edited = ok_json("signature", "edit", listed[2]["id"], "--name", "Brief")
    assert edited["name"] == "Brief"
    assert ok_json("signature", "delete", added["id"]) == {"id": added["id"], "deleted": True}
    with session_scope(db) as session:
        assert (
            signature_service.compose_defaults(
                session=session, caller=Caller.operator(tenant_id), user_id=user_id, account_id=account_id
            ).signature
            is None
        )
    too_big = tmp_path / "big.html"
    too_big.write_bytes(b"<p>" + b"a" * (cli_admin.MAX_SIGNATURE_BYTES + 10) + b"</p>")
    assert "larger than 256 KiB" in refused("signature", "edit", listed[2]["id"], "--html-file", too_big)


def test_tenant_is_resolved_explicitly(db: Engine) -> None:
    first = make_tenant(db, name="Acme")
    add_offline(db, first, "sales@acme.test")
    assert [a["email"] for a in ok_json("account", "list")] == ["sales@acme.test"]  # the only tenant
    second = make_tenant(db, name="Globex")
    add_offline(db, second, "info@globex.test")
    message = refused("account", "list")
    assert f"Several tenants exist: {first} (Acme), {second} (Globex); say which one." in message
    assert "hint: choose one with --tenant ID" in message
    error = refused_json("account", "list")
    assert (error["code"], error["fields"]["tenants"]) == ("tenant_required", [first, second])
    assert [a["email"] for a in ok_json("account", "list", "--tenant", second)] == ["info@globex.test"]
    assert "No tenant with id 77" in refused("account", "list", "--tenant", 77)
    assert [t["name"] for t in ok_json("tenant", "list")] == ["Acme", "Globex"]


def test_no_tenant_yet(db: Engine) -> None:
    message = refused("account", "list")
    assert message.startswith("error: No tenant exists yet.") and "hint: run crm-inbox init first." in message


def test_account_list_json_prints_views(db: Engine) -> None:
    tenant_id = make_tenant(db)
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    (view,) = ok_json("account", "list")
    assert view["id"] == account_id and view["status"] == "new" and view["folders"] == []
    assert {"last_error", "last_error_code", "imap", "smtp"} <= set(view)
    assert not {"secret_encrypted", "lease_owner", "lease_expires_at"} & set(view)


def test_account_edit_refuses_smtp_settings_and_points_at_the_setup(db: Engine) -> None:
    """SMTP settings are saved only after a test mail (smtp-setup); an edit only logs in, so it
    refuses them, even with --force or --no-check, and changes nothing. Removing SMTP is allowed."""
    tenant_id = make_tenant(db)
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    with session_scope(db) as session:
        row = session.get_one(MailAccount, account_id)
        row.smtp_host, row.smtp_port, row.smtp_security = "smtp.acme.test", 587, Security.STARTTLS
    for flags in (
        ["--smtp-host", "smtp.other.test"],
        ["--smtp-port", "465", "--force"],
        ["--smtp-security", "tls", "--no-check"],
        ["--smtp-username", "other"],
        ["--same-smtp-password"],
    ):
        message = refused("account", "edit", account_id, *flags)
        assert "saved only after a test mail was accepted" in message, message
        assert f"crm-inbox smtp-setup {account_id} --host HOST --test-to ADDRESS" in message
    error = refused_json("account", "edit", account_id, "--smtp-password-stdin", input="secret-pw-123\n")
    assert error["code"] == "smtp_setup_required" and error["fields"]["smtp_fields"] == ["smtp_password"]
    assert "secret-pw-123" not in json.dumps(error)
    with session_scope(db) as session:
        row = session.get_one(MailAccount, account_id)
        assert (row.smtp_host, row.smtp_port, row.smtp_security) == ("smtp.acme.test", 587, Security.STARTTLS)
    removed = ok_json("account", "edit", account_id, "--smtp-host", "", "--no-check")
    assert removed["smtp"] is None


def test_account_add_saves_smtp_only_after_an_accepted_test_mail(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`account add --smtp-*` follows the SMTP set-up's rule: --smtp-test-to is required, the
    test mail goes to a real aiosmtpd, and a refusal saves nothing (--no-check and --force only
    concern the IMAP login)."""
    tenant_id = make_tenant(db)
    monkeypatch.setenv("IMAP_PW", "imap-pw-123")
    monkeypatch.setenv("SMTP_PW", SMTP_PASSWORD)
    monkeypatch.setenv("WRONG_PW", "wrong-smtp-pw")
    with recording_smtp(None, Security.PLAIN) as smtp:  # type: ignore[arg-type]  # no TLS: no CA
        args = [
            *("account", "add", "--email", "sales@acme.test", "--imap-host", "imap.acme.test"),
            *("--password-env", "IMAP_PW", "--no-check", "--force"),
            *("--smtp-host", "127.0.0.1", "--smtp-port", smtp.port, "--smtp-security", "plain"),
            *("--smtp-username", SMTP_USER),
        ]
        message = refused(*args, "--smtp-password-env", "SMTP_PW")
        assert "Give an address the test mail is sent to" in message
        assert "hint: give the address the test mail goes to: --smtp-test-to" in message
        message = refused(*args, "--smtp-password-env", "WRONG_PW", "--smtp-test-to", "check@globex.test")
        assert "refused the username or password of" in message and "The account was not created" in message
        assert "hint: the attempt and the server's answer: crm-inbox mail-log --kind test" in message
        assert "wrong-smtp-pw" not in message
        with session_scope(db) as session:
            assert session.exec(select(MailAccount).where(MailAccount.tenant_id == tenant_id)).all() == []
        added = ok_json(*args, "--smtp-password-env", "SMTP_PW", "--smtp-test-to", "check@globex.test")
        assert added["smtp"] == f"127.0.0.1:{smtp.port} (plain)"
        [test_mail] = smtp.recorder.received
        assert (test_mail.mail_from, test_mail.rcpt_tos) == ("sales@acme.test", ["check@globex.test"])
    with session_scope(db) as session:
        row = session.get_one(MailAccount, added["id"])
        assert (row.smtp_username, row.smtp_security) == (SMTP_USER, Security.PLAIN)
    text = invoke("mail-log", "--kind", "test").stdout
    assert "check@globex.test" in text
