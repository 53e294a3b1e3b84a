"""OAuth2 providers a mailbox can be connected with: Google and Microsoft 365 built in, generic
ones configured by URLs (`Settings.oauth_providers`).

Plain values only: the HTTP exchanges live in `sync.oauth` (network), the consent and token
bookkeeping in `crm.oauth` (database). A provider is offered only once the operator registered
crm-inbox as an OAuth client with it and gave the client id (and secret) through settings.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field

from pydantic import SecretStr

from core.errors import InvalidInput, NotFound
from core.settings import OAuthProviderConfig, Settings, get_settings
from core.types import Security

GOOGLE = "google"
MICROSOFT = "microsoft"
# Provider names appear in URLs and CLI flags.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class OAuthProvider:
    name: str
    label: str
    authorization_url: str
    token_url: str
    revocation_url: str | None
    userinfo_url: str | None
    scopes: tuple[str, ...]
    client_id: str
    client_secret: SecretStr = field(repr=False)
    imap_host: str
    imap_port: int
    imap_security: Security
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: Security | None
    ca_file: str | None = None
    # RFC 8628 device authorization endpoint: sign in on another device (None: not offered).
    device_authorization_url: str | None = None
    # Extra query parameters of the authorization request (Google only returns a refresh token
    # with access_type=offline, and again on a later consent only with prompt=consent).
    authorize_params: tuple[tuple[str, str], ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.client_id)


def _google(settings: Settings) -> OAuthProvider:
    # https://developers.google.com/gmail/imap/xoauth2-protocol : the full mail scope is the only
    # one IMAP and SMTP accept; "openid email" puts the address in the id_token. Google's device
    # flow does not allow that scope, so no device authorization here.
    return OAuthProvider(
        name=GOOGLE,
        label="Google",
        authorization_url="https://accounts.google.com/o/oauth2/v2/auth",
        token_url="https://oauth2.googleapis.com/token",
        revocation_url="https://oauth2.googleapis.com/revoke",
        userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
        scopes=("https://mail.google.com/", "openid", "email"),
        client_id=settings.oauth_google_client_id,
        client_secret=settings.oauth_google_client_secret,
        imap_host="imap.gmail.com",
        imap_port=993,
        imap_security=Security.TLS,
        smtp_host="smtp.gmail.com",
        smtp_port=465,
        smtp_security=Security.TLS,
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
    )


def _microsoft(settings: Settings) -> OAuthProvider:
    # https://learn.microsoft.com/exchange/client-developer/legacy-protocols/how-to-authenticate-an-imap-pop-smtp-application-by-using-oauth
    # Microsoft's identity platform has no token revocation endpoint (RFC 7009): disconnecting
    # forgets the tokens here; the user removes the app's consent in their account settings.
    base = f"https://login.microsoftonline.com/{settings.oauth_microsoft_tenant}/oauth2/v2.0"
    return OAuthProvider(
        name=MICROSOFT,
        label="Microsoft 365",
        authorization_url=f"{base}/authorize",
        token_url=f"{base}/token",
        revocation_url=None,
        userinfo_url=None,  # the address comes from the id_token (openid + email scopes)
        scopes=(
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "https://outlook.office.com/SMTP.Send",
            "offline_access",
            "openid",
            "email",
        ),
        client_id=settings.oauth_microsoft_client_id,
        client_secret=settings.oauth_microsoft_client_secret,
        imap_host="outlook.office365.com",
        imap_port=993,
        imap_security=Security.TLS,
        smtp_host="smtp.office365.com",
        smtp_port=587,
        smtp_security=Security.STARTTLS,
        device_authorization_url=f"{base}/devicecode",
        authorize_params=(("prompt", "select_account"),),
    )


def _generic(name: str, config: OAuthProviderConfig) -> OAuthProvider:
    return OAuthProvider(
        name=name,
        label=config.label or name,
        authorization_url=config.authorization_url,
        token_url=config.token_url,
        revocation_url=config.revocation_url,
        userinfo_url=config.userinfo_url,
        scopes=tuple(config.scopes),
        client_id=config.client_id,
        client_secret=config.client_secret,
        imap_host=config.imap_host,
        imap_port=config.imap_port,
        imap_security=Security(config.imap_security),
        smtp_host=config.smtp_host,
        smtp_port=config.smtp_port,
        smtp_security=Security(config.smtp_security) if config.smtp_security else None,
        ca_file=config.ca_file,
        device_authorization_url=config.device_authorization_url,
    )


def all_providers(settings: Settings | None = None) -> dict[str, OAuthProvider]:
    """Every known provider, configured or not (the built-in names cannot be overridden)."""
    settings = settings or get_settings()
    found = {GOOGLE: _google(settings), MICROSOFT: _microsoft(settings)}
    for name, config in settings.oauth_providers.items():
        if name not in found and NAME_PATTERN.match(name):
            found[name] = _generic(name, config)
    return found


def configured_providers(settings: Settings | None = None) -> list[OAuthProvider]:
    return [p for p in all_providers(settings).values() if p.configured]


def get_provider(name: str, settings: Settings | None = None) -> OAuthProvider:
    provider = all_providers(settings).get(name)
    if provider is None:
        raise NotFound(
            "oauth_provider_not_found", f"There is no OAuth provider named {name!r}.", provider=name
        )
    if not provider.configured:
        raise InvalidInput(
            "oauth_provider_not_configured",
            f"{provider.label} is not set up on this server: an operator must register crm-inbox as an "
            "OAuth client with it and give the client id and secret in the settings.",
            provider=name,
        )
    return provider


def pkce_pair() -> tuple[SecretStr, str]:
    """A PKCE code verifier and its S256 challenge (RFC 7636 4.1, 4.2)."""
    verifier = secrets.token_urlsafe(64)[:96]
    return SecretStr(verifier), pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
