"""Consents in flight: the authorization request's `state` and PKCE verifier, kept between the
redirect to the provider and its callback.

* `state` is 32 random bytes; only its SHA-256 is stored, so a database read cannot forge a
  callback. It works once (a compare-and-set on `used_at`) and for `oauth_state_seconds`.
* It is bound to who started it: the same caller (tenant and user) and the same binding secret
  (the web session's id, or the CLI process's own nonce), both checked at the callback, so a
  callback URL sent to someone else, or replayed, is refused (RFC 6749 10.12, RFC 9700 4.7).
* The PKCE verifier (RFC 7636) is stored encrypted and sent only to the token endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.oauth import OAuthProvider, pkce_pair
from core.secrets import SecretBox
from core.types import utcnow
from crm import access
from crm.models import OAuthConsent


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _refused() -> InvalidInput:
    # One answer for unknown, used, expired and foreign states: nothing to probe.
    return InvalidInput(
        "oauth_state_invalid",
        "This sign-in link is not valid here: it expired, was already used, or was started by "
        "someone else. Start connecting the mailbox again.",
    )


@dataclass(frozen=True, slots=True)
class ConsentStart:
    authorization_url: str
    state: str  # also in the URL; the CLI matches the callback with it
    expires_in: int


@dataclass(frozen=True, slots=True)
class ConsentClaim:
    """A consent's callback accepted: what the code exchange needs."""

    provider: str
    verifier: SecretStr
    redirect_uri: str
    account_id: int | None


def check_can_start(*, session: Session, caller: Caller, account_id: int | None) -> None:
    """Who may start a consent: for a new mailbox an admin (as when adding one with a password);
    to reconnect an account, an admin or a user who can see it (its own mailbox). First, so an
    invisible account is "not found" whatever else is wrong with the request."""
    if account_id is not None:
        access.get_account(session, caller, account_id)
    else:
        access.require_admin(caller, "connect mail accounts")


def start_consent(
    *,
    session: Session,
    caller: Caller,
    provider: OAuthProvider,
    redirect_uri: str,
    binding: str,
    box: SecretBox,
    state_seconds: int,
    account_id: int | None = None,
    login_hint: str | None = None,
) -> ConsentStart:
    """Record a consent and build the provider's authorization URL (code flow with PKCE).
    `account_id`: reconnect that account (an admin, or a user who can see it); otherwise a
    new mailbox is connected (admins, as when adding one with a password)."""
    check_can_start(session=session, caller=caller, account_id=account_id)
    if account_id is not None:
        login_hint = login_hint or access.get_account(session, caller, account_id).email
    now = utcnow()
    # Consents nobody finished are of no use once expired.
    session.execute(delete(OAuthConsent).where(col(OAuthConsent.expires_at) < now))
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    session.add(
        OAuthConsent(
            state_hash=_hash(state),
            binding_hash=_hash(binding),
            tenant_id=caller.tenant_id,
            user_id=caller.user_id,
            provider=provider.name,
            verifier_encrypted=box.encrypt(verifier),
            redirect_uri=redirect_uri,
            account_id=account_id,
            expires_at=now + timedelta(seconds=state_seconds),
        )
    )
    session.flush()
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": redirect_uri,
        "scope": " ".join(provider.scopes),
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **dict(provider.authorize_params),
    }
    if login_hint:
        params["login_hint"] = login_hint
    sep = "&" if "?" in provider.authorization_url else "?"
    return ConsentStart(
        authorization_url=f"{provider.authorization_url}{sep}{urlencode(params)}",
        state=state,
        expires_in=state_seconds,
    )


def claim_consent(
    *, session: Session, caller: Caller, state: str, binding: str, box: SecretBox
) -> ConsentClaim:
    """The callback's state, checked and used up (once, before any network round trip)."""
    now = utcnow()
    row = session.exec(select(OAuthConsent).where(OAuthConsent.state_hash == _hash(state))).first()
    if (
        row is None
        or row.tenant_id != caller.tenant_id
        or row.user_id != caller.user_id
        or not hmac.compare_digest(row.binding_hash, _hash(binding))
        or row.expires_at < now
        or row.used_at is not None
    ):
        raise _refused()
    used = session.execute(
        update(OAuthConsent)
        .where(col(OAuthConsent.id) == row.id, col(OAuthConsent.used_at).is_(None))
        .values(used_at=now)
    )
    if not used.rowcount:  # type: ignore[attr-defined]
        raise _refused()  # a second callback with the same state, at the same moment
    return ConsentClaim(
        provider=row.provider,
        verifier=box.decrypt(row.verifier_encrypted),
        redirect_uri=row.redirect_uri,
        account_id=row.account_id,
    )
