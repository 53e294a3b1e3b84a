"""Connecting a mailbox by OAuth2 consent, end to end, for the faces (web API and CLI):

1. `start`: a consent is recorded (`crm.oauth.consent`) and the provider's URL returned;
2. `complete` (the callback): the state is checked and used up in a short transaction, then,
   with no session open, the code is exchanged (with the PKCE verifier), the address read
   from the id_token or the userinfo endpoint, and the connection checked over IMAP (and SMTP)
   with the new access token; only then is the account created or its tokens replaced;
3. `disconnect`: the tokens are revoked at the provider when it has a revocation endpoint,
   then forgotten; the account waits to be reconnected, its mail kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pydantic import SecretStr
from sqlalchemy import Engine

from core.caller import Caller
from core.connection import BearerToken, ConnectionSettings
from core.errors import InvalidInput
from core.oauth import OAuthProvider, all_providers, get_provider
from core.secrets import SecretBox
from core.settings import Settings, get_settings
from crm.mailboxes import (
    ConnectionCheckFailed,
    SaveResult,
    SessionFactory,
    check_view,
    connection_settings_of as stored_settings,
)
from crm.oauth import accounts, consent
from sync import errors, oauth, oauth_tokens
from sync.check import CheckResult, make_verifier, verify_connection

log = logging.getLogger(__name__)


def start(
    *,
    sessions: SessionFactory,
    caller: Caller,
    provider: str,
    redirect_uri: str,
    binding: str,
    box: SecretBox,
    settings: Settings | None = None,
    account_id: int | None = None,
) -> consent.ConsentStart:
    settings = settings or get_settings()
    with sessions() as session:
        consent.check_can_start(session=session, caller=caller, account_id=account_id)
    found = get_provider(provider, settings)
    with sessions() as session:
        return consent.start_consent(
            session=session,
            caller=caller,
            provider=found,
            redirect_uri=redirect_uri,
            binding=binding,
            box=box,
            state_seconds=settings.oauth_state_seconds,
            account_id=account_id,
        )


def _check_settings(
    provider: OAuthProvider, email: str, token: BearerToken, existing: ConnectionSettings | None
) -> ConnectionSettings:
    """Where to log in with the new token: the account's own servers when it exists (a
    reconnect, or a switch from its password), the provider's otherwise."""
    if existing is not None:
        return ConnectionSettings(
            imap_host=existing.imap_host,
            imap_port=existing.imap_port,
            imap_security=existing.imap_security,
            username=email,
            password=token,
            ca_file=existing.ca_file,
            smtp_host=existing.smtp_host,
            smtp_port=existing.smtp_port,
            smtp_security=existing.smtp_security,
        )
    return ConnectionSettings(
        imap_host=provider.imap_host,
        imap_port=provider.imap_port,
        imap_security=provider.imap_security,
        username=email,
        password=token,
        ca_file=provider.ca_file,
        smtp_host=provider.smtp_host,
        smtp_port=provider.smtp_port,
        smtp_security=provider.smtp_security,
    )


def complete(
    *,
    sessions: SessionFactory,
    caller: Caller,
    state: str,
    code: str | None,
    binding: str,
    box: SecretBox,
    settings: Settings | None = None,
    error: str | None = None,
    check: bool = True,
) -> SaveResult:
    """The callback: `code` and `state` from the provider's redirect (or its `error`)."""
    settings = settings or get_settings()
    with sessions() as session:
        claim = consent.claim_consent(session=session, caller=caller, state=state, binding=binding, box=box)
    if error or not code:
        raise InvalidInput(
            "oauth_denied",
            "The provider did not grant access (the consent was declined or failed); nothing was saved.",
            error=oauth._safe_word(error),
        )
    provider = get_provider(claim.provider, settings)
    timeout = settings.oauth_http_timeout_seconds
    try:
        tokens = oauth.exchange_code(
            provider, code=code, verifier=claim.verifier, redirect_uri=claim.redirect_uri, timeout=timeout
        )
    except oauth.OAuthGrantInvalid as exc:
        # RFC 6749 5.2: a code used twice, expired, for another redirect URI, or a PKCE verifier
        # that does not match its challenge. Not the account's problem: this consent failed.
        raise InvalidInput(
            "oauth_code_refused",
            f"{provider.label} refused the sign-in's authorization code (expired, already used, or "
            "not issued for this request); nothing was saved. Start connecting again.",
            provider=provider.name,
        ) from exc
    return _save_tokens(
        sessions=sessions,
        caller=caller,
        provider=provider,
        tokens=tokens,
        account_id=claim.account_id,
        box=box,
        settings=settings,
        check=check,
    )


def _save_tokens(
    *,
    sessions: SessionFactory,
    caller: Caller,
    provider: OAuthProvider,
    tokens: oauth.TokenSet,
    account_id: int | None,
    box: SecretBox,
    settings: Settings,
    check: bool,
) -> SaveResult:
    """After a consent (either flow): the address, the connection check with the new token,
    then the account created or its tokens replaced."""
    timeout = settings.oauth_http_timeout_seconds
    email = oauth.email_of(provider, tokens, timeout=timeout)
    if not email:
        raise InvalidInput(
            "oauth_email_missing",
            f"{provider.label} did not say which mailbox was signed in to (no e-mail address in its "
            "answer): check that the 'email' scope is allowed for crm-inbox.",
        )
    email = email.strip().lower()
    existing: ConnectionSettings | None = None
    with sessions() as session:
        target = accounts.existing_account_id(
            session=session, caller=caller, email=email, account_id=account_id
        )
        if target is not None:
            existing = accounts.server_settings(session=session, caller=caller, account_id=target)
    result = None
    if check:
        outcome = verify_connection(
            _check_settings(provider, email, BearerToken(tokens.access_token), existing), config=settings
        )
        result = check_view(outcome)
        if not result.ok:
            raise ConnectionCheckFailed(result)
    with sessions() as session:
        return accounts.save_oauth_account(
            session=session,
            caller=caller,
            provider=provider,
            email=email,
            tokens=accounts.OAuthTokens(
                access_token=tokens.access_token,
                refresh_token=tokens.refresh_token,
                expires_at=tokens.expires_at,
                scopes=tokens.scopes,
            ),
            box=box,
            account_id=account_id,
            check=result,
        )


def connect_with_device(
    *,
    sessions: SessionFactory,
    caller: Caller,
    provider: str,
    box: SecretBox,
    show: Callable[[oauth.DeviceCode], None],
    settings: Settings | None = None,
    account_id: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SaveResult:
    """RFC 8628 device authorization: the user signs in on another device with the code shown
    (`show`), while this polls the token endpoint at the interval the provider asks for. No
    redirect and no state: the device code itself, never shown, binds the answer to this call."""
    settings = settings or get_settings()
    with sessions() as session:
        consent.check_can_start(session=session, caller=caller, account_id=account_id)
    found = get_provider(provider, settings)
    timeout = settings.oauth_http_timeout_seconds
    device = oauth.start_device(found, timeout=timeout)
    show(device)
    deadline = time.monotonic() + device.expires_in
    interval = device.interval
    while True:
        sleep(interval)
        if time.monotonic() > deadline:
            raise oauth.DeviceFlowFailed(found.name, "expired_token")
        answer = oauth.poll_device(found, replace(device, interval=interval), timeout=timeout)
        if isinstance(answer, oauth.TokenSet):
            return _save_tokens(
                sessions=sessions,
                caller=caller,
                provider=found,
                tokens=answer,
                account_id=account_id,
                box=box,
                settings=settings,
                check=True,
            )
        if isinstance(answer, float):
            interval = answer


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    account_id: int
    provider: str
    revoked: bool  # the provider confirmed the revocation
    revocation_supported: bool  # the provider has a revocation endpoint at all


def disconnect(
    *,
    sessions: SessionFactory,
    caller: Caller,
    account_id: int,
    box: SecretBox,
    settings: Settings | None = None,
) -> DisconnectResult:
    settings = settings or get_settings()
    with sessions() as session:
        held = accounts.tokens_to_revoke(session=session, caller=caller, account_id=account_id, box=box)
    provider = all_providers(settings).get(held.provider)
    supported = bool(provider and provider.revocation_url)
    revoked = False
    if provider is not None and supported:
        # Revoking the refresh token ends the whole grant at Google and RFC 7009 servers.
        token, hint = (
            (held.refresh_token, "refresh_token")
            if held.refresh_token
            else (held.access_token, "access_token")
        )
        if token is not None:
            try:
                revoked = oauth.revoke(
                    provider, token, hint=hint, timeout=settings.oauth_http_timeout_seconds
                )
            except errors.SyncError as exc:
                log.warning("account %s: revocation at %s failed (%s)", account_id, held.provider, exc.code)
    with sessions() as session:
        accounts.forget_tokens(session=session, caller=caller, account_id=account_id, revoked=revoked)
    return DisconnectResult(
        account_id=account_id, provider=held.provider, revoked=revoked, revocation_supported=supported
    )


def connection_settings(
    *,
    sessions: SessionFactory,
    caller: Caller,
    account_id: int,
    box: SecretBox,
    db: Engine,
    settings: Settings,
) -> ConnectionSettings:
    """An account's stored settings for a connection test, with a fresh access token in place
    of the password for an OAuth account."""
    with sessions() as session:
        stored = stored_settings(session=session, caller=caller, account_id=account_id, box=box)
    if not oauth_tokens.is_oauth(db, account_id):
        return stored
    token = oauth_tokens.TokenSource(db, box, settings).bearer(account_id)
    return ConnectionSettings(
        imap_host=stored.imap_host,
        imap_port=stored.imap_port,
        imap_security=stored.imap_security,
        username=stored.username,
        password=token,
        ca_file=stored.ca_file,
        smtp_host=stored.smtp_host,
        smtp_port=stored.smtp_port,
        smtp_security=stored.smtp_security,
    )


def verifier_for_account(
    account_id: int, *, db: Engine, box: SecretBox, settings: Settings
) -> Callable[[ConnectionSettings], CheckResult]:
    """The connection check for an edit of `account_id`: an OAuth account (which stores no
    password) logs in with a fresh access token instead of its empty password."""
    verify = make_verifier(settings)
    if not oauth_tokens.is_oauth(db, account_id):
        return verify

    def with_token(connection: ConnectionSettings) -> CheckResult:
        password = connection.password
        if isinstance(password, SecretStr) and not password.get_secret_value():
            token = oauth_tokens.TokenSource(db, box, settings).bearer(account_id)
            connection = replace(connection, password=token, smtp_password=None)
        return verify(connection)

    return with_token
