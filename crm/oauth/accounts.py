"""Accounts that log in with OAuth2: connect one after a consent, reconnect it, switch a password
account to OAuth and back, disconnect.

Reconnecting or switching touches only the credentials (the grant row and the account's health
fields): mail, folder cursors, access grants and signatures stay, so nothing is synced again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import Session, select

from core.caller import Caller
from core.connection import ConnectionSettings
from core.errors import Conflict, InvalidInput
from core.oauth import OAuthProvider
from core.secrets import SecretBox
from core.types import AccountStatus, utcnow
from crm import access, tenants
from crm.mailboxes.views import CheckView, SaveResult, account_view
from crm.models import MailAccount, OAuthGrant
from crm.oauth.tokens import mark_needs_reconnect

_WAITING = (AccountStatus.NEEDS_RECONNECT, AccountStatus.NEEDS_CREDENTIALS, AccountStatus.AUTH_FAILED)


@dataclass(frozen=True, slots=True)
class OAuthTokens:
    access_token: SecretStr = field(repr=False)
    refresh_token: SecretStr | None = field(repr=False)
    expires_at: datetime | None
    scopes: tuple[str, ...]


def _target(session: Session, caller: Caller, email: str, account_id: int | None) -> MailAccount | None:
    """The account a consent connects: the one being reconnected, or an existing one with the
    same address (switching it from its password), or None for a new mailbox."""
    if account_id is not None:
        account = access.get_account(session, caller, account_id)
        if account.email.lower() != email.lower():
            raise InvalidInput(
                "oauth_email_mismatch",
                f"The provider signed in {email}, but this is {account.email}'s mailbox: sign in as "
                f"{account.email} to reconnect it.",
                email=email,
                account_email=account.email,
            )
        return account
    existing = session.exec(
        select(MailAccount).where(
            MailAccount.tenant_id == caller.tenant_id, func.lower(MailAccount.email) == email.lower()
        )
    ).first()
    if existing is None:
        return None
    return access.get_account(session, caller, existing.id or 0)


def existing_account_id(
    *, session: Session, caller: Caller, email: str, account_id: int | None
) -> int | None:
    """Which account a consent for `email` will update (None: a new one), checked for the caller."""
    account = _target(session, caller, email, account_id)
    return account.id if account is not None else None


def server_settings(*, session: Session, caller: Caller, account_id: int) -> ConnectionSettings:
    """An existing account's servers, to check a new token against them (no secret in it)."""
    account = access.get_account(session, caller, account_id)
    return ConnectionSettings(
        imap_host=account.imap_host,
        imap_port=account.imap_port,
        imap_security=account.imap_security,
        username=account.username,
        password=SecretStr(""),
        ca_file=account.ca_file,
        smtp_host=account.smtp_host,
        smtp_port=account.smtp_port,
        smtp_security=account.smtp_security,
    )


def save_oauth_account(
    *,
    session: Session,
    caller: Caller,
    provider: OAuthProvider,
    email: str,
    tokens: OAuthTokens,
    box: SecretBox,
    account_id: int | None = None,
    check: CheckView | None = None,
) -> SaveResult:
    """After a consent (and the connection check with its token): create the account, or put
    the new tokens on the existing one. Both tokens are encrypted like passwords."""
    account = _target(session, caller, email, account_id)
    if account is None:
        access.require_admin(caller, "connect mail accounts")
        tenant = tenants.lock_tenant_row(session, caller.tenant_id)
        tenants.ensure_quota(session=session, tenant=tenant)
        account = MailAccount(
            tenant_id=caller.tenant_id,
            email=email,
            imap_host=provider.imap_host,
            imap_port=provider.imap_port,
            imap_security=provider.imap_security,
            smtp_host=provider.smtp_host,
            smtp_port=provider.smtp_port,
            smtp_security=provider.smtp_security,
            username=email,
            # No password: the column holds an encrypted empty string.
            secret_encrypted=box.encrypt(SecretStr("")),
            ca_file=provider.ca_file,
        )
        session.add(account)
        session.flush()
    else:
        # The login name of XOAUTH2 is the address the token was issued for.
        account.username, account.smtp_username, account.smtp_secret_encrypted = email, None, None
    assert account.id is not None
    grant = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account.id)).first()
    if grant is None:
        grant = OAuthGrant(tenant_id=caller.tenant_id, account_id=account.id, provider=provider.name)
    grant.provider = provider.name
    grant.scopes = list(tokens.scopes)
    grant.access_token_encrypted = box.encrypt(tokens.access_token)
    grant.access_expires_at = tokens.expires_at
    if tokens.refresh_token is not None:  # else keep one given earlier (a provider may not resend it)
        grant.refresh_token_encrypted = box.encrypt(tokens.refresh_token)
    grant.version += 1  # any refresh in flight with the old tokens must not overwrite these
    grant.refreshing_owner = grant.refreshing_until = None
    grant.refresh_failures, grant.next_refresh_at = 0, None
    grant.usable = True
    grant.refreshed_at = None
    grant.connected_at = utcnow()
    grant.connected_by_user_id = caller.user_id
    session.add(grant)
    # New credentials deserve a fresh try: end any backoff or "reconnect" wait.
    account.auth_failures = account.consecutive_failures = 0
    account.next_attempt_at = None
    if account.status in _WAITING:
        account.status = AccountStatus.NEW
        account.last_error_code, account.last_error_params, account.last_error_at = None, {}, None
    if check is not None and not check.ok:
        account.last_error_code = "connection_check_failed"
        account.last_error_params = {
            "detail": check.message,
            "problem": check.problem,
            "service": check.service,
        }
        account.last_error_at = utcnow()
    session.add(account)
    session.flush()
    return SaveResult(account=account_view(session, account), check=check, checked=check is not None)


@dataclass(frozen=True, slots=True)
class GrantTokens:
    """The tokens of a grant, decrypted, to revoke them at the provider."""

    provider: str
    refresh_token: SecretStr | None = field(repr=False)
    access_token: SecretStr | None = field(repr=False)


def tokens_to_revoke(*, session: Session, caller: Caller, account_id: int, box: SecretBox) -> GrantTokens:
    """Step 1 of a disconnect (admins), read in a short session; the revocation follows with
    no session open, then `forget_tokens`."""
    access.get_account(session, caller, account_id)
    access.require_admin(caller, "disconnect mail accounts")
    grant = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).first()
    if grant is None:
        raise Conflict(
            "oauth_not_connected", f"Account {account_id} does not sign in with OAuth.", account_id=account_id
        )
    return GrantTokens(
        provider=grant.provider,
        refresh_token=box.decrypt(grant.refresh_token_encrypted) if grant.refresh_token_encrypted else None,
        access_token=box.decrypt(grant.access_token_encrypted) if grant.access_token_encrypted else None,
    )


def forget_tokens(*, session: Session, caller: Caller, account_id: int, revoked: bool) -> None:
    """Step 2 of a disconnect: the tokens are deleted, the account waits to be reconnected (its
    mail, cursors and access stay)."""
    access.get_account(session, caller, account_id)
    access.require_admin(caller, "disconnect mail accounts")
    grant = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).first()
    if grant is None:
        return
    grant.refresh_token_encrypted = grant.access_token_encrypted = None
    grant.access_expires_at = None
    grant.usable = False
    grant.version += 1
    session.add(grant)
    mark_needs_reconnect(
        session=session,
        account_id=account_id,
        code="oauth_disconnected",
        params={"provider": grant.provider, "revoked": revoked},
    )


def drop_grant(*, session: Session, account_id: int) -> bool:
    """The account goes back to its password (`crm.mailboxes.set_password`): tokens deleted."""
    grant = session.exec(select(OAuthGrant).where(OAuthGrant.account_id == account_id)).first()
    if grant is None:
        return False
    session.delete(grant)
    return True
