"""A valid access token for an OAuth account, refreshed when needed, once for all workers.

`TokenSource.access_token` returns the stored access token while it has more than
`oauth_refresh_margin_seconds` left; otherwise one worker claims the refresh with a
compare-and-set on the grant's version (`crm.oauth.tokens`), calls the provider with no
transaction open and stores the new access token with the rotated refresh token in one UPDATE.
Workers that lost the claim (threads here, or other processes on the same database) wait for
the version to move and use the token the winner stored: one refresh, one call to the provider.

`stale=` is the token a server just refused ([AUTHENTICATIONFAILED]): refreshed once more even
if it has not expired (revoked early, clock skew), unless another worker already replaced it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from pydantic import SecretStr
from sqlalchemy import Engine

from core.connection import BearerToken, Credential
from core.db import session_scope
from core.errors import Conflict
from core.oauth import get_provider
from core.secrets import SecretBox, SecretKeyError
from core.settings import Settings
from core.types import utcnow
from crm.oauth import tokens
from sync import errors, oauth

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a claim on a refresh lasts: longer than a token request can take (its timeout).
_CLAIM_EXTRA_SECONDS = 30.0


class NotOAuthAccount(errors.SyncError, Conflict):
    code_name = "oauth_not_connected"
    transient = False

    def __init__(self, account_id: int) -> None:
        super().__init__(account_id=account_id)


class TokenSource:
    def __init__(
        self,
        db: Engine,
        box: SecretBox,
        settings: Settings,
        *,
        owner: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.box = box
        self.settings = settings
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._sleep = sleep
        self.claim_seconds = settings.oauth_http_timeout_seconds + _CLAIM_EXTRA_SECONDS

    def decrypt(self, value: str) -> SecretStr:
        try:
            return self.box.decrypt(value)
        except SecretKeyError as exc:
            raise errors.CredentialsUnreadable() from exc

    def bearer(self, account_id: int, *, stale: BearerToken | None = None) -> BearerToken:
        return BearerToken(self.access_token(account_id, stale=stale.token if stale else None))

    def access_token(self, account_id: int, *, stale: SecretStr | None = None) -> SecretStr:
        waited_until = time.monotonic() + self.claim_seconds + 5
        while True:
            with session_scope(self.db) as session:
                grant = tokens.grant_of(session=session, account_id=account_id)
            if grant is None:
                raise NotOAuthAccount(account_id)
            if not grant.usable:
                raise oauth.OAuthGrantInvalid(grant.provider, "invalid_grant")
            now = utcnow()
            margin = timedelta(seconds=self.settings.oauth_refresh_margin_seconds)
            if grant.access_encrypted:
                current = self.decrypt(grant.access_encrypted)
                still_good = grant.access_expires_at is None or grant.access_expires_at > now + margin
                if still_good and (stale is None or current.get_secret_value() != stale.get_secret_value()):
                    return current
            if grant.next_refresh_at is not None and grant.next_refresh_at > now:
                raise oauth.OAuthProviderUnavailable(grant.provider, "waiting after a failed refresh")
            with session_scope(self.db) as session:
                claimed = tokens.claim_refresh(
                    session=session,
                    account_id=account_id,
                    version=grant.version,
                    owner=self.owner,
                    seconds=self.claim_seconds,
                )
            if claimed:
                return self._refresh(grant)
            if time.monotonic() > waited_until:
                raise oauth.OAuthProviderUnavailable(
                    grant.provider, "another worker's refresh did not finish"
                )
            self._sleep(0.05)  # another worker is refreshing: its token lands in the row

    def _refresh(self, grant: tokens.GrantState) -> SecretStr:
        account_id = grant.account_id
        try:
            provider = get_provider(grant.provider, self.settings)
            if not grant.refresh_encrypted:
                raise oauth.OAuthGrantInvalid(grant.provider, "no_refresh_token")
            fresh = oauth.refresh(
                provider,
                self.decrypt(grant.refresh_encrypted),
                grant.scopes,
                timeout=self.settings.oauth_http_timeout_seconds,
            )
        except errors.SyncError as exc:
            dead = isinstance(exc, oauth.OAuthGrantInvalid)
            with session_scope(self.db) as session:
                tokens.refresh_failed(
                    session=session,
                    account_id=account_id,
                    owner=self.owner,
                    code=exc.code,
                    params=exc.fields,
                    reconnect=dead,
                )
            log.warning("account %s: token refresh failed (%s)", account_id, exc.code)
            raise
        except Exception as exc:
            # The provider is not set up any more (settings changed): the claim must not linger.
            with session_scope(self.db) as session:
                tokens.refresh_failed(
                    session=session,
                    account_id=account_id,
                    owner=self.owner,
                    code="oauth_refused",
                    params={"provider": grant.provider, "error": type(exc).__name__},
                    reconnect=False,
                )
            raise
        with session_scope(self.db) as session:
            stored = tokens.store_tokens(
                session=session,
                account_id=account_id,
                version=grant.version,
                access_encrypted=self.box.encrypt(fresh.access_token),
                refresh_encrypted=self.box.encrypt(fresh.refresh_token) if fresh.refresh_token else None,
                expires_at=fresh.expires_at,
                scopes=fresh.scopes,
            )
        if not stored:  # our claim ran out and another worker refreshed meanwhile
            log.warning("account %s: a slower refresh was not stored (a newer one is)", account_id)
        else:
            log.info("account %s: access token refreshed", account_id)
        return fresh.access_token


def is_oauth(db: Engine, account_id: int) -> bool:
    with session_scope(db) as session:
        return tokens.grant_of(session=session, account_id=account_id) is not None


def with_credential(
    source: TokenSource,
    account_id: int,
    oauth_account: bool,
    secret_encrypted: str,
    use: Callable[[Credential], T],
) -> T:
    """Run `use` with the account's password, or with its access token: a token the server
    refuses (`AuthFailed`) is refreshed once more and tried again, then the failure stands."""
    if not oauth_account:
        return use(source.decrypt(secret_encrypted))
    first = source.bearer(account_id)
    try:
        return use(first)
    except errors.AuthFailed:
        log.info("account %s: access token refused, refreshing it once more", account_id)
        return use(source.bearer(account_id, stale=first))
