"""Talking to an OAuth2 provider: code exchange (with the PKCE verifier), refresh, revocation
(RFC 7009) and the user's e-mail address. The stdlib `urllib` is enough for four form posts.

What a failure means matters more than its text:
* `invalid_grant` (RFC 6749 5.2) on a refresh: the refresh token was revoked, expired or
  rotated away -> `OAuthGrantInvalid`, the account must be reconnected by a person;
* no answer, a 5xx, a 429 -> `OAuthProviderUnavailable`, transient: retried with backoff;
* any other refusal (`invalid_client`: the client secret changed) -> `OAuthRefused`, not
  retried (an operator must fix the settings).
Tokens and the client secret never reach a message or a log line; nothing logs response bodies.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from core.errors import InvalidInput, Unavailable
from core.oauth import OAuthProvider
from core.types import utcnow
from sync.errors import SyncError


class OAuthGrantInvalid(SyncError, InvalidInput):
    """The provider refused the refresh token (revoked, expired, rotated away)."""

    code_name = "oauth_reconnect_needed"
    transient = False

    def __init__(self, provider: str, error: str) -> None:
        super().__init__(provider=provider, error=error)


class OAuthProviderUnavailable(SyncError, Unavailable):
    code_name = "oauth_provider_unavailable"

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(provider=provider, reason=reason)


class OAuthRefused(SyncError, InvalidInput):
    code_name = "oauth_refused"
    transient = False

    def __init__(self, provider: str, error: str) -> None:
        super().__init__(provider=provider, error=error)


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What a token endpoint gave. `refresh_token` None: keep the one we have (no rotation)."""

    access_token: SecretStr = field(repr=False)
    refresh_token: SecretStr | None = field(repr=False)
    expires_at: datetime | None
    scopes: tuple[str, ...]
    id_token_email: str | None = None


def _safe_word(value: Any) -> str:
    """An OAuth error code is a short ASCII word (RFC 6749 5.2); anything else is not echoed."""
    text = str(value or "")
    return text if text.replace("_", "").isalnum() and len(text) <= 40 else "unrecognised"


def _post(provider: OAuthProvider, url: str, form: dict[str, str], timeout: float) -> dict[str, Any]:
    """A form POST with HTTP Basic client authentication (RFC 6749 2.3.1); the JSON answer."""
    secret = provider.client_secret.get_secret_value()
    if not secret:
        form = {**form, "client_id": provider.client_id}  # a public client (PKCE only)
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode("ascii"), method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Accept", "application/json")
    if secret:
        quote = urllib.parse.quote
        pair = f"{quote(provider.client_id, safe='')}:{quote(secret, safe='')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
    return _send(provider, request, timeout)


def _send(provider: OAuthProvider, request: urllib.request.Request, timeout: float) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        with exc:  # the error holds the response and its socket: closed here, not by the GC
            body = b"" if exc.code >= 500 or exc.code == 429 else exc.read(100_000)
        if exc.code >= 500 or exc.code == 429:
            raise OAuthProviderUnavailable(provider.name, f"HTTP {exc.code}") from None
        try:
            answer = json.loads(body or b"{}")
        except ValueError:
            answer = {}
        error = _safe_word(answer.get("error") if isinstance(answer, dict) else None)
        if error == "invalid_grant":
            raise OAuthGrantInvalid(provider.name, error) from None
        raise OAuthRefused(provider.name, error if error != "unrecognised" else f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OAuthProviderUnavailable(provider.name, type(exc).__name__) from None
    try:
        answer = json.loads(raw or b"{}")
    except ValueError:
        raise OAuthProviderUnavailable(provider.name, "an answer that is not JSON") from None
    if not isinstance(answer, dict):
        raise OAuthProviderUnavailable(provider.name, "an answer that is not a JSON object")
    return answer


def email_from_id_token(id_token: str) -> str | None:
    """The address in an OpenID Connect id_token's claims. Its signature is not checked: it came
    straight from the token endpoint over TLS, which OIDC Core 3.1.3.7 (6) allows."""
    parts = id_token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    for key in ("email", "preferred_username", "upn"):
        value = claims.get(key)
        if isinstance(value, str) and "@" in value:
            return value
    return None


def _expiry(expires_in: Any) -> datetime | None:
    """RFC 6749 5.1 `expires_in` (seconds; some send a string). Unknown: None, and the token is
    used until a server refuses it, then refreshed."""
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return None
    return utcnow() + timedelta(seconds=max(seconds, 0.0))


def _token_set(provider: OAuthProvider, answer: dict[str, Any], asked: tuple[str, ...]) -> TokenSet:
    access = answer.get("access_token")
    if not isinstance(access, str) or not access or any(c in access for c in "\r\n"):
        raise OAuthProviderUnavailable(provider.name, "a token answer without a usable access token")
    refresh = answer.get("refresh_token")
    expires_in = answer.get("expires_in")
    scope = answer.get("scope")
    id_token = answer.get("id_token")
    return TokenSet(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if isinstance(refresh, str) and refresh else None,
        expires_at=_expiry(expires_in),
        # RFC 6749 5.1: no scope in the answer means the requested scopes were granted.
        scopes=tuple(scope.split()) if isinstance(scope, str) and scope else asked,
        id_token_email=email_from_id_token(id_token) if isinstance(id_token, str) else None,
    )


def exchange_code(
    provider: OAuthProvider, *, code: str, verifier: SecretStr, redirect_uri: str, timeout: float = 15.0
) -> TokenSet:
    """RFC 6749 4.1.3 with RFC 7636 4.5: the code and the PKCE verifier for the first tokens."""
    answer = _post(
        provider,
        provider.token_url,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier.get_secret_value(),
        },
        timeout,
    )
    return _token_set(provider, answer, provider.scopes)


def refresh(
    provider: OAuthProvider, refresh_token: SecretStr, scopes: tuple[str, ...], timeout: float = 15.0
) -> TokenSet:
    """RFC 6749 6: a new access token (and maybe a new refresh token: rotation)."""
    answer = _post(
        provider,
        provider.token_url,
        {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()},
        timeout,
    )
    return _token_set(provider, answer, scopes)


def revoke(provider: OAuthProvider, token: SecretStr, *, hint: str, timeout: float = 15.0) -> bool:
    """RFC 7009: False when the provider has no revocation endpoint."""
    if not provider.revocation_url:
        return False
    _post(
        provider,
        provider.revocation_url,
        {"token": token.get_secret_value(), "token_type_hint": hint},
        timeout,
    )
    return True


def email_of(provider: OAuthProvider, tokens: TokenSet, timeout: float = 15.0) -> str | None:
    """The mailbox's address: from the id_token, else from the userinfo endpoint."""
    if tokens.id_token_email:
        return tokens.id_token_email
    if not provider.userinfo_url:
        return None
    request = urllib.request.Request(provider.userinfo_url, method="GET")
    request.add_header("Authorization", f"Bearer {tokens.access_token.get_secret_value()}")
    request.add_header("Accept", "application/json")
    answer = _send(provider, request, timeout)
    email = answer.get("email")
    return email if isinstance(email, str) and "@" in email else None


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True, slots=True)
class DeviceCode:
    """RFC 8628 3.2: what the user is shown (`user_code` at `verification_uri`), and what we
    poll with (`device_code`, a secret)."""

    device_code: SecretStr = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval: float
    expires_in: float


class DeviceFlowFailed(SyncError, InvalidInput):
    """The user declined, or the code expired before they signed in (RFC 8628 3.5)."""

    code_name = "oauth_device_failed"
    transient = False

    def __init__(self, provider: str, error: str) -> None:
        super().__init__(provider=provider, error=error)


def start_device(provider: OAuthProvider, timeout: float = 15.0) -> DeviceCode:
    if not provider.device_authorization_url:
        raise DeviceFlowFailed(provider.name, "device_flow_not_offered")
    answer = _post(provider, provider.device_authorization_url, {"scope": " ".join(provider.scopes)}, timeout)
    device_code, user_code = answer.get("device_code"), answer.get("user_code")
    uri = answer.get("verification_uri") or answer.get("verification_url")  # Google's older name
    if not isinstance(device_code, str) or not isinstance(user_code, str) or not isinstance(uri, str):
        raise OAuthProviderUnavailable(provider.name, "a device authorization answer without its codes")
    complete = answer.get("verification_uri_complete")
    return DeviceCode(
        device_code=SecretStr(device_code),
        user_code=user_code,
        verification_uri=uri,
        verification_uri_complete=complete if isinstance(complete, str) else None,
        interval=float(answer.get("interval") or 5),
        expires_in=float(answer.get("expires_in") or 600),
    )


def poll_device(
    provider: OAuthProvider, device: DeviceCode, timeout: float = 15.0
) -> TokenSet | float | None:
    """One token request (RFC 8628 3.4): the tokens once the user allowed access; None while
    they have not (authorization_pending); a new, longer interval on `slow_down`."""
    try:
        answer = _post(
            provider,
            provider.token_url,
            {
                "grant_type": DEVICE_GRANT,
                "device_code": device.device_code.get_secret_value(),
                "client_id": provider.client_id,
            },
            timeout,
        )
    except OAuthRefused as exc:
        error = str(exc.fields.get("error"))
        if error == "authorization_pending":
            return None
        if error == "slow_down":
            return device.interval + 5  # RFC 8628 3.5
        raise DeviceFlowFailed(provider.name, error) from None
    except OAuthGrantInvalid as exc:  # some servers answer an expired device code this way
        raise DeviceFlowFailed(provider.name, "expired_token") from exc
    return _token_set(provider, answer, provider.scopes)
