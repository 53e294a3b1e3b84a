"""The pure rules of mail arriving at a forwarding address (crm/rules/inbound.py), from tables;
and the channel service's quota and sync rules on a real database."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from core.caller import Caller
from core.db import session_scope
from core.errors import QuotaExceeded
from core.secrets import SecretBox
from crm import forwarding, sync_state, tenants
from crm.rules.inbound import (
    CreditKind,
    Ignore,
    clean_local_part,
    credit_sender,
    find_confirmation,
    ignore_reason,
    is_forward_subject,
)

HOSTED = "sales-7k2f@in.example.com"
CHANNEL = frozenset({HOSTED, "sales@ourco.example"})


def own(email: str) -> bool:
    return email.endswith("@ourco.example")


def credit(
    headers: list[tuple[str, str]], from_: tuple[str, str], **kw: object
) -> tuple[CreditKind, str, str | None]:
    args: dict[str, object] = {
        "envelope_from": from_[0],
        "subject": "Pricing",
        "text_body": "",
        "attached_senders": [],
    }
    args.update(kw)
    c = credit_sender(
        headers=headers,
        from_=from_,
        is_own=own,
        channel_addresses=CHANNEL,
        hosted_address=HOSTED,
        **args,  # type: ignore[arg-type]
    )
    return c.kind, c.email, c.forwarded_by


JANE = ("jane@acme.example", "Jane")
INLINE = "---------- Forwarded message ---------\nFrom: Jane <jane@acme.example>\nSubject: x\n"


@pytest.mark.parametrize(
    ("headers", "from_", "extra", "expected"),
    [
        ([], JANE, {}, (CreditKind.DIRECT, "jane@acme.example", None)),
        (
            [("x-forwarded-for", f"sales@ourco.example {HOSTED}")],
            JANE,
            {},
            (CreditKind.AUTOMATIC, "jane@acme.example", "sales@ourco.example"),
        ),
        (
            [("resent-from", "Ops <ops@ourco.example>")],
            JANE,
            {},
            (CreditKind.AUTOMATIC, "jane@acme.example", "ops@ourco.example"),
        ),
        (
            [("delivered-to", "sales@ourco.example"), ("delivered-to", HOSTED)],
            JANE,
            {},
            (CreditKind.AUTOMATIC, "jane@acme.example", "sales@ourco.example"),
        ),
        (
            [],
            JANE,
            {"envelope_from": "bounce+srs@ourco.example"},
            (CreditKind.AUTOMATIC, "jane@acme.example", "bounce+srs@ourco.example"),
        ),
        (
            [("x-original-from", "Jane <jane@acme.example>")],
            ("sales@ourco.example", "Sales"),
            {},
            (CreditKind.ORIGINAL_FROM, "jane@acme.example", "sales@ourco.example"),
        ),
        (
            [],
            ("bob@ourco.example", "Bob"),
            {
                "subject": "Fwd: x",
                "text_body": INLINE,
            },
            (CreditKind.INLINE, "jane@acme.example", "bob@ourco.example"),
        ),
        (
            [],
            ("bob@ourco.example", "Bob"),
            {"attached_senders": [("jane@acme.example", "Jane")]},
            (CreditKind.ATTACHED, "jane@acme.example", "bob@ourco.example"),
        ),
        (
            [],
            ("bob@ourco.example", "Bob"),
            {"subject": "Fwd: x", "text_body": "nothing"},
            (CreditKind.UNATTRIBUTED, "bob@ourco.example", "bob@ourco.example"),
        ),
        # A colleague writing to the team (no forward markers) is just that.
        (
            [],
            ("bob@ourco.example", "Bob"),
            {"subject": "Lunch?"},
            (CreditKind.DIRECT, "bob@ourco.example", None),
        ),
        # A forward naming only our own people credits none of them.
        (
            [],
            ("bob@ourco.example", "Bob"),
            {"subject": "TR: x", "text_body": "De : Alice <alice@ourco.example>\nObjet : x\n"},
            (CreditKind.UNATTRIBUTED, "bob@ourco.example", "bob@ourco.example"),
        ),
    ],
)
def test_credit(
    headers: list[tuple[str, str]],
    from_: tuple[str, str],
    extra: dict[str, object],
    expected: tuple[CreditKind, str, str | None],
) -> None:
    assert credit(headers, from_, **extra) == expected


@pytest.mark.parametrize(
    ("headers", "envelope", "from_email", "ctype", "ours", "expected"),
    [
        (
            [("auto-submitted", "auto-replied")],
            "a@x.example",
            "a@x.example",
            "text/plain",
            False,
            Ignore.AUTOMATED,
        ),
        ([("auto-submitted", "no")], "a@x.example", "a@x.example", "text/plain", False, None),
        ([("x-autoreply", "yes")], "a@x.example", "a@x.example", "text/plain", False, Ignore.AUTOMATED),
        ([("precedence", "auto_reply")], "a@x.example", "a@x.example", "text/plain", False, Ignore.AUTOMATED),
        ([], "", "a@x.example", "text/plain", False, Ignore.BOUNCE),
        ([], "a@x.example", "MAILER-DAEMON@x.example", "text/plain", False, Ignore.BOUNCE),
        (
            [],
            "a@x.example",
            "a@x.example",
            'multipart/report; report-type="delivery-status"',
            False,
            Ignore.BOUNCE,
        ),
        ([], "a@x.example", "a@x.example", "text/plain", True, Ignore.OWN_MAIL),
        ([], "a@x.example", HOSTED, "text/plain", False, Ignore.OWN_MAIL),
        # List headers are no reason: a Google Group forwarding to us carries them on all mail.
        (
            [("list-id", "<sales.ourco.example>"), ("precedence", "list")],
            "a@x.example",
            "a@x.example",
            "text/plain",
            False,
            None,
        ),
    ],
)
def test_ignore_reason(
    headers: list[tuple[str, str]],
    envelope: str,
    from_email: str,
    ctype: str,
    ours: bool,
    expected: Ignore | None,
) -> None:
    found = ignore_reason(
        headers=headers,
        envelope_from=envelope,
        from_email=from_email,
        content_type=ctype,
        channel_addresses=CHANNEL,
        ours=ours,
    )
    assert (found[0] if found else None) is expected


def test_outlook_confirmation_and_lookalikes() -> None:
    found = find_confirmation(
        from_email="no-reply@accountprotection.microsoft.com",
        subject="Verify your forwarding address",
        text_body="Use this code: 483920\nor open https://account.live.com/confirm?x=1\n",
    )
    assert found is not None and (found.provider, found.code) == ("outlook", "483920")
    assert found.link == "https://account.live.com/confirm?x=1"
    # The same words from anyone else are an ordinary mail.
    assert (
        find_confirmation(
            from_email="phish@evil.example", subject="Verify your forwarding", text_body="code: 1234"
        )
        is None
    )
    assert find_confirmation(from_email="jane@acme.example", subject="Hello", text_body="") is None


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Fwd: x", True),
        ("FW: x", True),
        ("TR : x", True),
        ("WG: x", True),
        ("Re: x", False),
        ("Forward planning", False),
    ],
)
def test_forward_subject(subject: str, expected: bool) -> None:
    assert is_forward_subject(subject) is expected


def test_local_part() -> None:
    assert clean_local_part("  Sales EMEA / Nord ") == "sales-emea-nord"
    assert clean_local_part("!!!") == ""


def test_channels_count_against_the_quota_and_are_never_synced(sqlite_db: Engine) -> None:
    with session_scope(sqlite_db) as session:
        tenant = tenants.create_tenant(session=session, name="Small", account_quota=1, own_domains=[])
        op = Caller.operator(tenant.id)
        box = SecretBox.from_settings()
        channel = forwarding.create_channel(
            session=session, caller=op, box=box, domain="in.example.com", name="Sales"
        )
    with session_scope(sqlite_db) as session, pytest.raises(QuotaExceeded):
        forwarding.create_channel(
            session=session, caller=op, box=box, domain="in.example.com", name="Support"
        )
    with session_scope(sqlite_db) as session:
        assert channel.account_id not in dict(sync_state.syncable_account_ids(session=session))


def test_an_unused_channel_can_be_deleted_like_an_account(sqlite_db: Engine) -> None:
    from crm import mailboxes

    with session_scope(sqlite_db) as session:
        tenant = tenants.create_tenant(session=session, name="T", account_quota=2, own_domains=[])
        op = Caller.operator(tenant.id)
        channel = forwarding.create_channel(
            session=session, caller=op, box=SecretBox.from_settings(), domain="in.example.com", name="Sales"
        )
    with session_scope(sqlite_db) as session:
        mailboxes.delete_account(session=session, caller=op, account_id=channel.account_id)
    with session_scope(sqlite_db) as session:
        assert forwarding.list_channels(session=session, caller=op) == []
