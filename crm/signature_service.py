"""Signatures of a mail account (at most three), their mail-merge context, rendering, and what
the compose form starts with.

Adding, editing and deleting are an admin's. Reading, previewing and compose defaults are for
anyone who sees the account; a signature of an account the caller cannot see is
`signature_not_found`. Sanitizing and rendering are the pure `signatures` package's; this module
supplies the values (the sending user, the tenant, the account) and turns its errors into ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import Session, col, select

import signatures
from core.caller import Caller
from core.errors import Conflict, InvalidInput, not_found
from core.types import utcnow
from crm import access, grants, tenants
from crm.models import AccountAccess, MailAccount, Signature, Tenant, User

MAX_SIGNATURES_PER_ACCOUNT = 3
MAX_NAME_LENGTH = 100

# The signature package's error classes -> the `reason` field of `signature_invalid`.
_REASONS: tuple[tuple[type[signatures.SignatureError], str], ...] = (
    (signatures.InlineSvgRefused, "inline_svg"),
    (signatures.UnknownMergeTag, "unknown_merge_tag"),
    (signatures.TemplateSyntaxInvalid, "syntax_error"),
    (signatures.UnsafeTemplate, "unsafe_template"),
)


@dataclass(frozen=True, slots=True)
class SignatureView:
    id: int
    account_id: int
    name: str
    html: str  # the sanitized mail-merge template
    text: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SignatureSaved:
    """A saved signature and the warnings to show the person who wrote it (e.g. an SVG image)."""

    signature: SignatureView
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RenderedView:
    html: str
    text: str


@dataclass(frozen=True, slots=True)
class SignatureChoice:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ComposeDefaults:
    """What the compose form starts with: the default signature rendered (None when the user has
    not chosen one) and the other signatures the user may switch to."""

    account_id: int
    signature: SignatureChoice | None
    rendered: RenderedView | None
    others: tuple[SignatureChoice, ...]


def signature_invalid(exc: signatures.SignatureError) -> InvalidInput:
    """The signature package's refusal, in our family; its message is written for the editor."""
    reason = next((r for t, r in _REASONS if isinstance(exc, t)), "invalid")
    fields: dict[str, object] = {"reason": reason}
    if isinstance(exc, signatures.UnknownMergeTag):
        fields["unknown"] = list(exc.unknown)
    if isinstance(exc, signatures.TemplateSyntaxInvalid):
        fields["line"] = exc.lineno
    return InvalidInput("signature_invalid", str(exc), **fields)


def _view(signature: Signature) -> SignatureView:
    return SignatureView(
        id=signature.id or 0,
        account_id=signature.account_id,
        name=signature.name,
        html=signature.html,
        text=signature.text,
        updated_at=signature.updated_at,
    )


def _get(session: Session, caller: Caller, signature_id: int) -> Signature:
    """A signature of an account the caller sees; anything else is not found."""
    found = session.exec(
        select(Signature)
        .join(MailAccount, col(MailAccount.id) == col(Signature.account_id))
        .where(Signature.id == signature_id, access.account_visible(caller))
    ).first()
    if found is None:
        raise not_found("signature", signature_id)
    return found


def _rows(session: Session, caller: Caller, account_id: int) -> list[Signature]:
    access.get_account(session, caller, account_id)
    return list(
        session.exec(
            select(Signature)
            .where(Signature.account_id == account_id, Signature.tenant_id == caller.tenant_id)
            .order_by(col(Signature.id))
        ).all()
    )


def list_signatures(*, session: Session, caller: Caller, account_id: int) -> list[SignatureView]:
    """An account's signatures (an account the caller cannot see is not found)."""
    return [_view(s) for s in _rows(session, caller, account_id)]


def _prepare(html: str, text: str | None) -> tuple[str, str, tuple[str, ...]]:
    """Sanitize + validate the HTML template (and the text one when given): what is stored is
    exactly what was validated."""
    try:
        prepared = signatures.prepare_signature_template(html)
        if text is not None and text.strip():
            signatures.validate_template(text)
            text_version = text.strip()
        else:
            text_version = prepared.text
    except signatures.SignatureError as exc:
        raise signature_invalid(exc) from exc
    if not prepared.html.strip():
        raise InvalidInput(
            "signature_empty",
            "The signature is empty once cleaned: give it some text or an image.",
            field="html",
        )
    return prepared.html, text_version, tuple(prepared.warnings)


def _check_name(session: Session, account_id: int, name: str, own_id: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput(
            "signature_name_required", "A signature needs a name (e.g. 'Formal', 'Short').", field="name"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            "signature_name_too_long",
            f"A signature name has at most {MAX_NAME_LENGTH} characters.",
            field="name",
            maximum=MAX_NAME_LENGTH,
        )
    clash = session.exec(
        select(Signature).where(Signature.account_id == account_id, Signature.name == name)
    ).first()
    if clash is not None and clash.id != own_id:
        raise Conflict(
            "signature_name_taken",
            f"Account {account_id} already has a signature named {name!r} (id {clash.id}).",
            field="name",
            name=name,
            signature_id=clash.id,
        )
    return name


def add_signature(
    *, session: Session, caller: Caller, account_id: int, name: str, html: str, text: str | None = None
) -> SignatureSaved:
    """Save a new signature (at most three per account). `text` is the plain-text template;
    without it the text version is derived from the HTML."""
    access.get_account(session, caller, account_id)
    access.require_admin(caller, "add signatures")
    # Lock the account row so two concurrent adds cannot both pass the count (PostgreSQL).
    account = session.exec(select(MailAccount).where(MailAccount.id == account_id).with_for_update()).one()
    existing = _rows(session, caller, account_id)
    if len(existing) >= MAX_SIGNATURES_PER_ACCOUNT:
        names = ", ".join(f"{s.name!r} (id {s.id})" for s in existing)
        raise Conflict(
            "signature_limit_reached",
            f"Account {account.email} already has {MAX_SIGNATURES_PER_ACCOUNT} signatures, the most "
            f"an account can have: {names}. Edit or delete one of them instead.",
            account_id=account_id,
            limit=MAX_SIGNATURES_PER_ACCOUNT,
            signature_ids=[s.id for s in existing],
        )
    name = _check_name(session, account_id, name)
    clean_html, text_version, warnings = _prepare(html, text)
    signature = Signature(
        tenant_id=account.tenant_id, account_id=account_id, name=name, html=clean_html, text=text_version
    )
    session.add(signature)
    session.flush()
    return SignatureSaved(signature=_view(signature), warnings=warnings)


def update_signature(
    *,
    session: Session,
    caller: Caller,
    signature_id: int,
    name: str | None = None,
    html: str | None = None,
    text: str | None = None,
) -> SignatureSaved:
    """Rename and/or replace a signature's templates. New HTML without new text re-derives the text."""
    signature = _get(session, caller, signature_id)
    access.require_admin(caller, "edit signatures")
    warnings: tuple[str, ...] = ()
    if name is not None:
        signature.name = _check_name(session, signature.account_id, name, signature.id)
    if html is not None:
        signature.html, signature.text, warnings = _prepare(html, text)
    elif text is not None:
        signature.text = _prepare(signature.html, text)[1]
    signature.updated_at = utcnow()
    session.add(signature)
    session.flush()
    return SignatureSaved(signature=_view(signature), warnings=warnings)


def delete_signature(*, session: Session, caller: Caller, signature_id: int) -> None:
    """Delete a signature; users who had it as default get no default for that account."""
    signature = _get(session, caller, signature_id)
    access.require_admin(caller, "delete signatures")
    session.execute(
        update(AccountAccess)
        .where(col(AccountAccess.default_signature_id) == signature_id)
        .values(default_signature_id=None)
    )
    session.delete(signature)
    session.flush()


def _context(session: Session, user: User, account: MailAccount) -> signatures.MergeContext:
    tenant = session.get_one(Tenant, account.tenant_id)
    return signatures.MergeContext(
        sender=signatures.SenderInfo(
            first_name=user.first_name,
            last_name=user.last_name,
            full_name=f"{user.first_name} {user.last_name}".strip(),
            job_title=user.job_title,
            phone=user.phone,
            email=user.email,
        ),
        company=signatures.CompanyInfo(name=tenant.name),
        account=signatures.AccountInfo(email=account.email, display_name=account.display_name),
    )


def merge_context(
    *, session: Session, caller: Caller, account_id: int, user_id: int | None = None
) -> signatures.MergeContext:
    """The mail-merge values of one mail: the sending user (the caller by default), their company
    (the tenant), the account."""
    user = tenants.target_user(session, caller, user_id)
    return _context(session, user, access.get_account(session, caller, account_id))


def _render(signature: Signature, ctx: signatures.MergeContext) -> RenderedView:
    try:
        rendered = signatures.render_signature(signature.html, ctx)
        text = rendered.text
        if signature.text.strip():
            text = signatures.render_text(signature.text, ctx).strip()
    except signatures.SignatureError as exc:
        raise signature_invalid(exc) from exc
    return RenderedView(html=rendered.html, text=text)


def render_signature(
    *, session: Session, caller: Caller, signature_id: int, user_id: int | None = None
) -> RenderedView:
    """A signature filled in for one sender (the caller by default): a preview, or a mail about
    to be sent."""
    signature = _get(session, caller, signature_id)
    ctx = merge_context(session=session, caller=caller, account_id=signature.account_id, user_id=user_id)
    return _render(signature, ctx)


def compose_defaults(
    *, session: Session, caller: Caller, account_id: int, user_id: int | None = None
) -> ComposeDefaults:
    """The compose form of a user (the caller by default) sending from one account."""
    user = tenants.target_user(session, caller, user_id)
    account = access.get_account(session, caller, account_id)
    grant = grants.grant_of(session, user.id or 0, account_id, caller.tenant_id)
    if grant is None:
        raise Conflict(
            "no_account_access",
            f"{user.email} cannot send from {account.email}: the user has no access to it.",
            user_id=user.id,
            account_id=account_id,
        )
    if not account.active:
        raise Conflict(
            "account_inactive",
            f"{user.email} cannot send from {account.email}: it is deactivated.",
            account_id=account_id,
        )
    rows = _rows(session, caller, account_id)
    default = next((s for s in rows if s.id == grant.default_signature_id), None)
    rendered = _render(default, _context(session, user, account)) if default is not None else None
    return ComposeDefaults(
        account_id=account_id,
        signature=SignatureChoice(id=default.id or 0, name=default.name) if default else None,
        rendered=rendered,
        others=tuple(SignatureChoice(id=s.id or 0, name=s.name) for s in rows if s is not default),
    )


@dataclass(frozen=True, slots=True)
class DraftPreview:
    """A signature being written, filled in for one sender: what the editor shows live."""

    html: str
    text: str
    warnings: tuple[str, ...]  # what the sanitizer took out or would refuse to load


def merge_tags() -> tuple[str, ...]:
    """The merge tags a signature may use, e.g. `sender.full_name`."""
    return signatures.KNOWN_TAGS


def preview_draft(
    *,
    session: Session,
    caller: Caller,
    account_id: int,
    html: str,
    text: str | None = None,
    user_id: int | None = None,
) -> DraftPreview:
    """An unsaved signature sanitized and validated exactly as saving would, then rendered for
    a user (the caller by default). Nothing is stored."""
    clean_html, text_version, warnings = _prepare(html, text)
    ctx = merge_context(session=session, caller=caller, account_id=account_id, user_id=user_id)
    try:
        rendered = signatures.render_signature(clean_html, ctx)
        rendered_text = (
            signatures.render_text(text_version, ctx).strip() if text_version.strip() else rendered.text
        )
    except signatures.SignatureError as exc:
        raise signature_invalid(exc) from exc
    return DraftPreview(html=rendered.html, text=rendered_text, warnings=warnings)
