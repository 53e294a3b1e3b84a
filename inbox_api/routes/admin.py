"""Administration over the API: mail accounts (with the connection check), access and defaults,
signatures (with a preview for a user), users, skipped mail and sync health.

Secrets are write-only: passwords go in, never come out (views carry none). The connection check
talks to a mail server, so those routes end the request's read transaction first and run the
service with short transactions of its own (no session is held while a server answers).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, SecretStr

from core.db import get_engine, session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm import auth, grants, mail_media, mailboxes, signature_service, tenants
from crm.grants import GrantView
from crm.mailboxes import AccountView, SaveResult, SkippedView
from crm.signature_service import ComposeDefaults, RenderedView, SignatureSaved, SignatureView
from crm.tenants import TenantView, UserView
from inbox_api.deps import CallerDep, SessionDep
from inbox_api.routes import media
from sync import oauth_flow
from sync.check import make_verifier
from sync.smtp_setup import make_test_sender

router = APIRouter(prefix="/api", tags=["administration"])


class AccountIn(BaseModel):
    email: str = Field(max_length=320)  # checked by the service (email-validator)
    imap_host: str = Field(min_length=1, max_length=255)
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_security: Security = Security.TLS
    username: str = Field(min_length=1, max_length=320)
    password: SecretStr = Field(min_length=1, max_length=1000, description="Write-only; never returned")
    display_name: str = Field(default="", max_length=200)
    # SMTP at creation follows the SMTP set-up's rule: a test mail to smtp_test_to is sent with
    # these settings and the account is created only once the server accepted it (else 409
    # smtp_test_failed and nothing is saved). Without smtp_host: no SMTP, set it up later.
    smtp_host: str | None = Field(default=None, max_length=255, description="None: connect without SMTP")
    smtp_port: int | None = Field(default=None, ge=1, le=65535, description="Default: 587, 465 or 25")
    smtp_security: Security | None = Field(default=None, description="Default: starttls")
    smtp_username: str | None = Field(default=None, max_length=320, description="Default: the IMAP one")
    smtp_password: SecretStr | None = Field(
        default=None, max_length=1000, description="Write-only; default: the IMAP one"
    )
    smtp_test_to: str | None = Field(
        default=None, max_length=320, description="Where the SMTP test mail goes (required with smtp_host)"
    )
    sync_interval_seconds: int = Field(default=300, ge=10)
    sync_since: datetime | None = None
    check: bool = Field(
        default=True, description="Log in over IMAP before saving (the SMTP test mail is always sent)"
    )
    force: bool = Field(
        default=False,
        description="Save even when the IMAP check fails (the failure is kept); never skips the SMTP test",
    )


class AccountEditIn(BaseModel):
    display_name: str | None = Field(default=None, max_length=200)
    imap_host: str | None = Field(default=None, max_length=255)
    imap_port: int | None = Field(default=None, ge=1, le=65535)
    imap_security: Security | None = None
    username: str | None = Field(default=None, max_length=320)
    password: SecretStr | None = Field(default=None, max_length=1000, description="Write-only")
    # SMTP settings are saved only after a test mail: PUT /api/accounts/{id}/smtp. Here an empty
    # smtp_host removes SMTP; any other SMTP field is refused (422 smtp_setup_required).
    smtp_host: str | None = Field(default=None, max_length=255, description="Only '' (removes SMTP)")
    smtp_port: int | None = Field(default=None, ge=1, le=65535, description="Refused: use the SMTP setup")
    smtp_security: Security | None = Field(default=None, description="Refused: use the SMTP setup")
    smtp_username: str | None = Field(default=None, max_length=320, description="Refused: use the SMTP setup")
    smtp_password: SecretStr | None = Field(
        default=None, max_length=1000, description="Refused: use the SMTP setup"
    )
    sync_interval_seconds: int | None = Field(default=None, ge=10)
    check: bool = True
    force: bool = False


class GrantIn(BaseModel):
    user_id: int


class SignatureIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    html: str = Field(max_length=200_000)
    text: str | None = Field(default=None, max_length=100_000)


class SignatureEditIn(BaseModel):
    name: str | None = Field(default=None, max_length=100)
    html: str | None = Field(default=None, max_length=200_000)
    text: str | None = Field(default=None, max_length=100_000)


class UserIn(BaseModel):
    email: str = Field(max_length=320)  # checked by the service (email-validator)
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    is_admin: bool = False
    password: SecretStr | None = Field(default=None, max_length=1000, description="Write-only")


class ActiveIn(BaseModel):
    active: bool


class DefaultAccountIn(BaseModel):
    account_id: int | None


class DefaultSignatureIn(BaseModel):
    signature_id: int | None


# ---------------------------------------------------------------------------------------------
# Tenant and accounts


@router.get("/tenant", summary="My tenant: quota and accounts in use")
def tenant(session: SessionDep, caller: CallerDep) -> TenantView:
    return tenants.tenant_view(session=session, caller=caller)


@router.get("/accounts", summary="Mail accounts I may see, with their sync health")
def list_accounts(session: SessionDep, caller: CallerDep) -> list[AccountView]:
    return mailboxes.list_accounts(session=session, caller=caller)


@router.get("/accounts/{account_id}", summary="One mail account with its folders and last error")
def get_account(account_id: int, session: SessionDep, caller: CallerDep) -> AccountView:
    return mailboxes.get_account(session=session, caller=caller, account_id=account_id)


@router.post(
    "/accounts",
    status_code=201,
    summary="Connect a mailbox (admins; logs in first; SMTP saved once a test mail was accepted)",
)
def add_account(body: AccountIn, session: SessionDep, caller: CallerDep) -> SaveResult:
    session.commit()  # nothing of this request's session stays open during the check
    smtp = mailboxes.SmtpInput(
        host=body.smtp_host,
        port=body.smtp_port,
        security=body.smtp_security,
        username=body.smtp_username,
        password=body.smtp_password,
        test_to=body.smtp_test_to,
    )
    data = mailboxes.AccountInput(
        email=str(body.email),
        imap_host=body.imap_host,
        imap_port=body.imap_port,
        imap_security=body.imap_security,
        username=body.username,
        display_name=body.display_name,
        smtp_host=body.smtp_host,
        smtp_port=body.smtp_port,
        smtp_security=body.smtp_security,
        sync_interval_seconds=body.sync_interval_seconds,
        sync_since=body.sync_since,
    )
    return mailboxes.connect_account(
        sessions=session_scope,
        caller=caller,
        data=data,
        password=body.password,
        box=SecretBox.from_settings(),
        smtp=smtp,
        verify=make_verifier(get_settings()) if body.check else None,
        force=body.force,
        send_test=make_test_sender(get_settings()),
    )


@router.patch("/accounts/{account_id}", summary="Edit a mail account (admins; logs in with new settings)")
def edit_account(account_id: int, body: AccountEditIn, session: SessionDep, caller: CallerDep) -> SaveResult:
    session.commit()
    changes = mailboxes.AccountChanges(
        display_name=body.display_name,
        imap_host=body.imap_host,
        imap_port=body.imap_port,
        imap_security=body.imap_security,
        username=body.username,
        password=body.password,
        smtp_host=body.smtp_host,
        smtp_port=body.smtp_port,
        smtp_security=body.smtp_security,
        smtp_username=body.smtp_username,
        smtp_password=body.smtp_password,
        sync_interval_seconds=body.sync_interval_seconds,
    )
    try:
        return mailboxes.edit_account(
            sessions=session_scope,
            caller=caller,
            account_id=account_id,
            changes=changes,
            box=SecretBox.from_settings(),
            # An OAuth account is checked with a fresh access token (it stores no password).
            verify=oauth_flow.verifier_for_account(
                account_id, db=get_engine(), box=SecretBox.from_settings(), settings=get_settings()
            )
            if body.check
            else None,
            force=body.force,
        )
    except DomainError as exc:
        if exc.code == "smtp_setup_required":  # where SMTP settings are changed, in this face's terms
            exc.fields["setup"] = f"PUT /api/accounts/{account_id}/smtp"
        raise


@router.post("/accounts/{account_id}/active", summary="Deactivate (keeps the mail) or reactivate an account")
def set_account_active(
    account_id: int, body: ActiveIn, session: SessionDep, caller: CallerDep
) -> AccountView:
    if body.active:
        return mailboxes.reactivate_account(session=session, caller=caller, account_id=account_id)
    return mailboxes.deactivate_account(session=session, caller=caller, account_id=account_id)


@router.delete(
    "/accounts/{account_id}", status_code=204, summary="Delete an account never used (else refused)"
)
def delete_account(account_id: int, session: SessionDep, caller: CallerDep) -> None:
    mailboxes.delete_account(session=session, caller=caller, account_id=account_id)


@router.get("/accounts/{account_id}/skipped", summary="Mail of an account that was not synced, and why")
def skipped(
    account_id: int, session: SessionDep, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[SkippedView]:
    return mailboxes.list_skipped(session=session, caller=caller, account_id=account_id, limit=limit)


# ---------------------------------------------------------------------------------------------
# Access and defaults


@router.get("/accounts/{account_id}/grants", summary="Who may see an account's mail (admins)")
def list_grants(account_id: int, session: SessionDep, caller: CallerDep) -> list[GrantView]:
    return grants.list_grants(session=session, caller=caller, account_id=account_id)


@router.post(
    "/accounts/{account_id}/grants", status_code=201, summary="Give a user an account's mail (admins)"
)
def grant(account_id: int, body: GrantIn, session: SessionDep, caller: CallerDep) -> GrantView:
    return grants.grant_access(session=session, caller=caller, account_id=account_id, user_id=body.user_id)


@router.delete(
    "/accounts/{account_id}/grants/{user_id}", status_code=204, summary="Take an account away (admins)"
)
def revoke(account_id: int, user_id: int, session: SessionDep, caller: CallerDep) -> None:
    grants.revoke_access(session=session, caller=caller, account_id=account_id, user_id=user_id)


@router.put("/users/{user_id}/default-account", summary="The account a user composes from by default")
def set_default_account(
    user_id: int, body: DefaultAccountIn, session: SessionDep, caller: CallerDep
) -> UserView:
    return grants.set_default_account(
        session=session, caller=caller, user_id=user_id, account_id=body.account_id
    )


@router.put("/accounts/{account_id}/default-signature", summary="My default signature for an account")
def set_default_signature(
    account_id: int, body: DefaultSignatureIn, session: SessionDep, caller: CallerDep
) -> GrantView:
    return grants.set_default_signature(
        session=session, caller=caller, account_id=account_id, signature_id=body.signature_id
    )


# ---------------------------------------------------------------------------------------------
# Signatures


@router.get("/accounts/{account_id}/signatures", summary="An account's signatures (up to three)")
def list_signatures(account_id: int, session: SessionDep, caller: CallerDep) -> list[SignatureView]:
    return signature_service.list_signatures(session=session, caller=caller, account_id=account_id)


@router.post(
    "/accounts/{account_id}/signatures", status_code=201, summary="Add a signature (admins; sanitized)"
)
def add_signature(
    account_id: int, body: SignatureIn, session: SessionDep, caller: CallerDep
) -> SignatureSaved:
    return signature_service.add_signature(
        session=session, caller=caller, account_id=account_id, name=body.name, html=body.html, text=body.text
    )


@router.patch("/signatures/{signature_id}", summary="Edit a signature (admins)")
def edit_signature(
    signature_id: int, body: SignatureEditIn, session: SessionDep, caller: CallerDep
) -> SignatureSaved:
    return signature_service.update_signature(
        session=session,
        caller=caller,
        signature_id=signature_id,
        name=body.name,
        html=body.html,
        text=body.text,
    )


@router.delete("/signatures/{signature_id}", status_code=204, summary="Delete a signature (admins)")
def delete_signature(signature_id: int, session: SessionDep, caller: CallerDep) -> None:
    signature_service.delete_signature(session=session, caller=caller, signature_id=signature_id)


@router.get("/signatures/{signature_id}/preview", summary="A signature filled in for a user (default: me)")
def preview_signature(
    signature_id: int, session: SessionDep, caller: CallerDep, user_id: int | None = None
) -> RenderedView:
    return signature_service.render_signature(
        session=session, caller=caller, signature_id=signature_id, user_id=user_id
    )


class SignatureDraftIn(BaseModel):
    html: str = Field(max_length=200_000)
    text: str | None = Field(default=None, max_length=100_000)
    user_id: int | None = Field(default=None, description="Fill in as this user (default: me)")


@router.post(
    "/accounts/{account_id}/signatures/preview",
    summary="Preview an unsaved signature as a user, with the sanitizer's warnings (nothing stored)",
)
def preview_draft(
    account_id: int, body: SignatureDraftIn, session: SessionDep, caller: CallerDep
) -> signature_service.DraftPreview:
    shown = signature_service.preview_draft(
        session=session,
        caller=caller,
        account_id=account_id,
        html=body.html,
        text=body.text,
        user_id=body.user_id,
    )
    # The logo of a signature is a remote image: the preview loads it through the image proxy,
    # like a reader who chose to show images (the page itself never contacts its host).
    html, _remote, _inline = mail_media.rewrite_images(shown.html, media.proxy_url, lambda _cid: None)
    return dataclasses.replace(shown, html=html)


@router.get("/signature-tags", summary="The merge tags a signature may use")
def signature_tags(caller: CallerDep) -> list[str]:
    return list(signature_service.merge_tags())


@router.get(
    "/accounts/{account_id}/compose-defaults", summary="My default signature and the others for an account"
)
def compose_defaults(account_id: int, session: SessionDep, caller: CallerDep) -> ComposeDefaults:
    return signature_service.compose_defaults(session=session, caller=caller, account_id=account_id)


# ---------------------------------------------------------------------------------------------
# Users


@router.get("/users", summary="The tenant's users (admins)")
def list_users(session: SessionDep, caller: CallerDep) -> list[UserView]:
    return tenants.list_users(session=session, caller=caller)


@router.post("/users", status_code=201, summary="Add a user (admins); the password is write-only")
def add_user(body: UserIn, session: SessionDep, caller: CallerDep) -> UserView:
    user = tenants.create_user(
        session=session,
        caller=caller,
        email=str(body.email),
        first_name=body.first_name,
        last_name=body.last_name,
        is_admin=body.is_admin,
    )
    if body.password is not None:
        auth.set_password(session=session, caller=caller, user_id=user.id, password=body.password)
    return user


@router.post(
    "/users/{user_id}/active", summary="Deactivate (sessions and tokens end now) or reactivate a user"
)
def set_user_active(user_id: int, body: ActiveIn, session: SessionDep, caller: CallerDep) -> UserView:
    return tenants.set_user_active(session=session, caller=caller, user_id=user_id, active=body.active)
