"""Signatures, rendering and compose defaults (`crm.signature_service`) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from core.caller import Caller
from core.db import session_scope
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from crm import grants, mailboxes, signature_service
from crm.models import AccountAccess, MailAccount, Signature, User
from signatures import KNOWN_TAGS
from tests.factories import add_offline, caller_of, grant, make_tenant, make_user

FORMAL = (
    '<p onclick="steal()"><b>{{ sender.full_name }}</b><br>{{ sender.job_title }}, {{ company.name }}<br>'
    "Tel. {{ sender.phone }}<br>{{ account.display_name }} &lt;{{ account.email }}&gt;</p>"
    "<script>alert(1)</script>"
)


@pytest.fixture
def team(db: Engine) -> tuple[int, int, int]:
    """(tenant, account, user): Acme GmbH with the sales mailbox and Ann, who has access."""
    tenant_id = make_tenant(db, name="Acme GmbH")
    account_id = add_offline(db, tenant_id, "sales@acme.test")
    with session_scope(db) as session:
        session.get_one(MailAccount, account_id).display_name = "Acme Sales"
    user_id = make_user(
        db,
        tenant_id,
        "ann@acme.test",
        first_name="Ann",
        last_name="Lee",
        job_title="Head of Sales",
        phone="+49 30 1",
    )
    grant(db, tenant_id, account_id, user_id)
    return tenant_id, account_id, user_id


def test_signature_is_sanitized_and_text_stored(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, _ = team
    with session_scope(db) as s:
        saved = signature_service.add_signature(
            session=s, caller=Caller.operator(tenant_id), account_id=account_id, name="Formal", html=FORMAL
        )
    assert isinstance(saved, signature_service.SignatureSaved) and saved.warnings == ()
    with session_scope(db) as session:
        stored = session.get_one(Signature, saved.signature.id)
    assert (stored.html, stored.text) == (saved.signature.html, saved.signature.text)
    assert "<script" not in stored.html and "onclick" not in stored.html and "alert" not in stored.html
    assert "<b>{{ sender.full_name }}</b>" in stored.html
    assert stored.text.startswith("{{ sender.full_name }}\n{{ sender.job_title }}, {{ company.name }}")


def test_signature_limit_svg_and_unknown_tags(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, _ = team
    op = Caller.operator(tenant_id)
    with session_scope(db) as session:
        with pytest.raises(InvalidInput) as svg_inline:
            signature_service.add_signature(
                session=session, caller=op, account_id=account_id, name="Logo", html="<svg><rect/></svg>"
            )
        assert (svg_inline.value.code, svg_inline.value.fields) == (
            "signature_invalid",
            {"reason": "inline_svg"},
        )
        assert "Inline SVG graphics cannot be used" in svg_inline.value.message
        with pytest.raises(InvalidInput) as unknown:
            signature_service.add_signature(
                session=session, caller=op, account_id=account_id, name="X", html="{{ sender.nickname }}"
            )
        assert unknown.value.code == "signature_invalid"
        assert unknown.value.fields == {"reason": "unknown_merge_tag", "unknown": ["sender.nickname"]}
        assert "unknown merge tag {{ sender.nickname }}" in unknown.value.message
        for tag in KNOWN_TAGS:
            assert "{{ " + tag + " }}" in unknown.value.message
        with pytest.raises(InvalidInput) as nameless:
            signature_service.add_signature(
                session=session, caller=op, account_id=account_id, name=" ", html="x"
            )
        assert nameless.value.code == "signature_name_required"
        svg = signature_service.add_signature(
            session=session,
            caller=op,
            account_id=account_id,
            name="Logo",
            html='<img src="https://acme.test/logo.svg" alt="">',
        )
        assert len(svg.warnings) == 1 and "SVG image" in svg.warnings[0]
        signature_service.add_signature(
            session=session,
            caller=op,
            account_id=account_id,
            name="Short",
            html="<p>{{ sender.first_name }}</p>",
        )
        with pytest.raises(Conflict) as taken:
            signature_service.add_signature(
                session=session, caller=op, account_id=account_id, name="Short", html="<p>x</p>"
            )
        assert taken.value.code == "signature_name_taken"
        assert "already has a signature named 'Short'" in taken.value.message
        signature_service.add_signature(
            session=session, caller=op, account_id=account_id, name="Formal", html=FORMAL
        )
        with pytest.raises(Conflict) as fourth:
            signature_service.add_signature(
                session=session, caller=op, account_id=account_id, name="Fourth", html="<p>4</p>"
            )
        assert fourth.value.code == "signature_limit_reached"
        assert fourth.value.fields["limit"] == 3 and len(fourth.value.fields["signature_ids"]) == 3
        assert "already has 3 signatures, the most an account can have" in fourth.value.message
        assert (
            "'Logo'" in fourth.value.message and "Edit or delete one of them instead" in fourth.value.message
        )
        assert len(signature_service.list_signatures(session=session, caller=op, account_id=account_id)) == 3


def test_update_and_delete_signature(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    op = Caller.operator(tenant_id)
    with session_scope(db) as session:
        sig = signature_service.add_signature(
            session=session, caller=op, account_id=account_id, name="Short", html="<p>A</p>"
        ).signature
        updated = signature_service.update_signature(
            session=session,
            caller=op,
            signature_id=sig.id,
            name="Brief",
            html="<p>{{ sender.first_name }}<script>x</script></p>",
        )
        assert (updated.signature.name, updated.signature.html) == ("Brief", "<p>{{ sender.first_name }}</p>")
        assert updated.signature.text == "{{ sender.first_name }}"
        with pytest.raises(InvalidInput) as unknown:
            signature_service.update_signature(
                session=session, caller=op, signature_id=sig.id, html="{{ company.ceo }}"
            )
        assert unknown.value.fields["reason"] == "unknown_merge_tag"
        grants.set_default_signature(
            session=session, caller=op, user_id=user_id, account_id=account_id, signature_id=sig.id
        )
        signature_service.delete_signature(session=session, caller=op, signature_id=sig.id)
        access = session.exec(select(AccountAccess).where(AccountAccess.user_id == user_id)).one()
        assert access.default_signature_id is None
        with pytest.raises(NotFound) as gone:
            signature_service.delete_signature(session=session, caller=op, signature_id=sig.id)
        assert gone.value.code == "signature_not_found"


def test_render_with_real_user_tenant_and_account(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    with session_scope(db) as session:
        sig = signature_service.add_signature(
            session=session,
            caller=Caller.operator(tenant_id),
            account_id=account_id,
            name="Formal",
            html=FORMAL,
        ).signature
        session.get_one(User, user_id).last_name = "Lee <script>"  # merge values are escaped
    ann = caller_of(db, tenant_id, user_id)
    with session_scope(db) as session:  # Ann previews her own signature (the caller by default)
        rendered = signature_service.render_signature(session=session, caller=ann, signature_id=sig.id)
    assert "<b>Ann Lee &lt;script&gt;</b>" in rendered.html
    assert "Head of Sales, Acme GmbH" in rendered.html
    assert "Tel. +49 30 1" in rendered.html
    assert "Acme Sales &lt;sales@acme.test&gt;" in rendered.html
    assert rendered.text.splitlines()[:3] == ["Ann Lee <script>", "Head of Sales, Acme GmbH", "Tel. +49 30 1"]


def test_default_signature_rules_and_compose_defaults(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    op = Caller.operator(tenant_id)
    other_account = add_offline(db, tenant_id, "support@acme.test")
    bob = make_user(db, tenant_id, "bob@acme.test")
    with session_scope(db) as session:
        formal = signature_service.add_signature(
            session=session, caller=op, account_id=account_id, name="Formal", html=FORMAL
        ).signature
        short = signature_service.add_signature(
            session=session,
            caller=op,
            account_id=account_id,
            name="Short",
            html="<p>{{ sender.first_name }}</p>",
        ).signature
        foreign = signature_service.add_signature(
            session=session, caller=op, account_id=other_account, name="Support", html="<p>S</p>"
        )

        none_yet = signature_service.compose_defaults(
            session=session, caller=op, user_id=user_id, account_id=account_id
        )
        assert (none_yet.signature, none_yet.rendered) == (None, None)
        assert [c.name for c in none_yet.others] == ["Formal", "Short"]

        with pytest.raises(InvalidInput) as not_its:
            grants.set_default_signature(
                session=session,
                caller=op,
                user_id=user_id,
                account_id=account_id,
                signature_id=foreign.signature.id,
            )
        assert not_its.value.code == "signature_not_of_account"
        assert not_its.value.fields["signature_ids"] == [formal.id, short.id]
        assert f"is not a signature of account {account_id}" in not_its.value.message
        assert f"{formal.id} (Formal), {short.id} (Short)" in not_its.value.message
        with pytest.raises(Conflict) as no_access:
            grants.set_default_signature(
                session=session, caller=op, user_id=bob, account_id=account_id, signature_id=short.id
            )
        assert no_access.value.code == "no_account_access" and "crm-inbox" not in no_access.value.message

    ann = caller_of(db, tenant_id, user_id)
    with session_scope(db) as session:  # Ann chooses her own default
        chosen = grants.set_default_signature(
            session=session, caller=ann, account_id=account_id, signature_id=short.id
        )
        assert chosen.default_signature_id == short.id
        defaults = signature_service.compose_defaults(session=session, caller=ann, account_id=account_id)
        assert defaults.signature == signature_service.SignatureChoice(id=short.id, name="Short")
        assert defaults.rendered is not None
        assert (defaults.rendered.html, defaults.rendered.text) == ("<p>Ann</p>", "Ann")
        assert defaults.others == (signature_service.SignatureChoice(id=formal.id, name="Formal"),)

        with pytest.raises(Conflict) as bob_refused:
            signature_service.compose_defaults(session=session, caller=op, user_id=bob, account_id=account_id)
        assert bob_refused.value.code == "no_account_access"
        assert (
            "bob@acme.test cannot send from sales@acme.test: the user has no access"
            in bob_refused.value.message
        )
        mailboxes.deactivate_account(session=session, caller=op, account_id=account_id)
        with pytest.raises(Conflict) as inactive:
            signature_service.compose_defaults(
                session=session, caller=op, user_id=user_id, account_id=account_id
            )
        assert inactive.value.code == "account_inactive"
        # Ann no longer sees the deactivated account at all.
        with pytest.raises(NotFound) as hidden:
            signature_service.compose_defaults(session=session, caller=ann, account_id=account_id)
        assert hidden.value.code == "account_not_found"


def test_signature_changes_are_an_admins(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, user_id = team
    ann = caller_of(db, tenant_id, user_id)
    with session_scope(db) as session:
        sig = signature_service.add_signature(
            session=session,
            caller=Caller.operator(tenant_id),
            account_id=account_id,
            name="S",
            html="<p>S</p>",
        ).signature
        for call in (
            lambda: signature_service.add_signature(
                session=session, caller=ann, account_id=account_id, name="X", html="x"
            ),
            lambda: signature_service.update_signature(
                session=session, caller=ann, signature_id=sig.id, name="Y"
            ),
            lambda: signature_service.delete_signature(session=session, caller=ann, signature_id=sig.id),
        ):
            with pytest.raises(Forbidden) as refused:
                call()
            assert refused.value.code == "admin_required"
        # Reading is for anyone who sees the account.
        assert [
            s.id
            for s in signature_service.list_signatures(session=session, caller=ann, account_id=account_id)
        ] == [sig.id]


def test_draft_preview_renders_like_saving_and_stores_nothing(db: Engine, team: tuple[int, int, int]) -> None:
    tenant_id, account_id, ann = team
    admin = make_user(db, tenant_id, "boss@acme.test", is_admin=True)
    bob = make_user(db, tenant_id, "bob@acme.test")
    grant(db, tenant_id, account_id, bob)
    draft = FORMAL + '<img src="https://cdn.acme.test/logo.svg">'
    with session_scope(db) as s:
        shown = signature_service.preview_draft(
            session=s, caller=caller_of(db, tenant_id, admin), account_id=account_id, html=draft, user_id=ann
        )
        assert "<b>Ann Lee</b>" in shown.html and "Head of Sales, Acme GmbH" in shown.html
        assert "<script" not in shown.html and "onclick" not in shown.html
        assert shown.text.startswith("Ann Lee\nHead of Sales, Acme GmbH")
        assert any("SVG" in w for w in shown.warnings)
        assert s.exec(select(Signature)).all() == []
        # A member previews as themself only; a bad template is refused in words.
        with pytest.raises(Forbidden):
            signature_service.preview_draft(
                session=s,
                caller=caller_of(db, tenant_id, bob),
                account_id=account_id,
                html=draft,
                user_id=ann,
            )
        with pytest.raises(InvalidInput, match="shoe_size"):
            signature_service.preview_draft(
                session=s,
                caller=caller_of(db, tenant_id, bob),
                account_id=account_id,
                html="{{ sender.shoe_size }}",
            )
    assert "sender.full_name" in signature_service.merge_tags()
