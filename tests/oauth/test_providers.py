"""The provider registry: built-in endpoints and scopes, generic providers from settings, secrets
kept out of reprs."""

from __future__ import annotations

import json

import pytest

from core import oauth
from core.errors import InvalidInput, NotFound
from core.settings import Settings, reset_settings
from core.types import Security


def test_builtin_providers_carry_their_endpoints_hosts_and_mail_scopes(settings: Settings) -> None:
    found = oauth.all_providers(settings)
    google, microsoft = found["google"], found["microsoft"]
    assert "https://mail.google.com/" in google.scopes
    assert google.imap_host == "imap.gmail.com" and google.imap_security is Security.TLS
    assert google.smtp_host == "smtp.gmail.com"
    assert google.revocation_url == "https://oauth2.googleapis.com/revoke"
    assert dict(google.authorize_params)["access_type"] == "offline"
    assert {
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
    } <= set(microsoft.scopes)
    assert microsoft.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert microsoft.imap_host == "outlook.office365.com"
    assert microsoft.smtp_port == 587 and microsoft.smtp_security is Security.STARTTLS
    assert microsoft.revocation_url is None


def test_unconfigured_provider_is_refused_and_unknown_is_not_found(settings: Settings) -> None:
    assert oauth.configured_providers(settings) == []
    with pytest.raises(InvalidInput) as refused:
        oauth.get_provider("google", settings)
    assert refused.value.code == "oauth_provider_not_configured"
    with pytest.raises(NotFound):
        oauth.get_provider("nope", settings)


def test_settings_configure_clients_and_generic_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_INBOX_OAUTH_GOOGLE_CLIENT_ID", "gid")
    monkeypatch.setenv("CRM_INBOX_OAUTH_GOOGLE_CLIENT_SECRET", "g-secret-value")
    monkeypatch.setenv("CRM_INBOX_OAUTH_MICROSOFT_TENANT", "contoso.example")
    monkeypatch.setenv(
        "CRM_INBOX_OAUTH_PROVIDERS",
        json.dumps(
            {
                "corp": {
                    "authorization_url": "https://sso.corp.example/auth",
                    "token_url": "https://sso.corp.example/token",
                    "scopes": ["openid", "email"],
                    "client_id": "cid",
                    "client_secret": "corp-secret-value",
                    "imap_host": "mail.corp.example",
                    "smtp_host": "mail.corp.example",
                    "smtp_port": 587,
                    "smtp_security": "starttls",
                },
                # A generic provider cannot replace a built-in one.
                "google": {"authorization_url": "x", "token_url": "x", "client_id": "x", "imap_host": "x"},
            }
        ),
    )
    reset_settings()
    settings = Settings()
    names = [p.name for p in oauth.configured_providers(settings)]
    assert names == ["google", "corp"]
    google = oauth.get_provider("google", settings)
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.client_secret.get_secret_value() == "g-secret-value"
    corp = oauth.get_provider("corp", settings)
    assert corp.smtp_security is Security.STARTTLS and corp.imap_port == 993
    microsoft = oauth.all_providers(settings)["microsoft"]
    assert "login.microsoftonline.com/contoso.example/" in microsoft.token_url
    # Secrets never in a repr (what a log line or a traceback would show).
    for text in (repr(settings), repr(google), repr(corp), str(settings.model_dump())):
        assert "g-secret-value" not in text and "corp-secret-value" not in text


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 appendix B.
    assert (
        oauth.pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier, challenge = oauth.pkce_pair()
    assert 43 <= len(verifier.get_secret_value()) <= 128
    assert oauth.pkce_challenge(verifier.get_secret_value()) == challenge
