"""Device authorization (RFC 8628): sign in on another device with a code, while crm-inbox
polls the token endpoint (pending, then the tokens); a denial saves nothing; from the CLI."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, func
from sqlmodel import select
from typer.testing import CliRunner

from core.caller import Caller
from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import Settings
from crm.models import MailAccount
from crm_inbox.cli import app
from sync import oauth_flow
from sync.oauth import DeviceCode
from tests.factories import make_tenant
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import PROVIDER, OAuthUser


def test_device_flow_polls_until_the_user_allows(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(sqlite_db)
    shown: list[DeviceCode] = []
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:  # the user gets round to it after the first poll
            auth_server.approve_device(shown[0].user_code, oauth_user.email)

    before = auth_server.device_polls
    result = oauth_flow.connect_with_device(
        sessions=session_scope,
        caller=Caller.operator(tenant),
        provider=PROVIDER,
        box=SecretBox.from_settings(testidp),
        show=shown.append,
        settings=testidp,
        sleep=sleep,
    )
    assert shown[0].verification_uri == f"{auth_server.base_url}/device" and shown[0].user_code
    assert sleeps == [5.0, 5.0]  # the provider's interval between polls
    assert auth_server.device_polls == before + 2
    assert result.check is not None and result.check.ok
    assert result.account.email == oauth_user.email and result.account.oauth is not None
    # Declined on the other device: a clear error, nothing saved.
    declined: list[DeviceCode] = []

    def deny(seconds: float) -> None:
        auth_server.approve_device(declined[0].user_code, oauth_user.email, deny=True)

    with pytest.raises(DomainError) as refused:
        oauth_flow.connect_with_device(
            sessions=session_scope,
            caller=Caller.operator(tenant),
            provider=PROVIDER,
            box=SecretBox.from_settings(testidp),
            show=declined.append,
            settings=testidp,
            sleep=deny,
        )
    assert refused.value.code == "oauth_device_failed" and "access_denied" in refused.value.message
    with session_scope(sqlite_db) as session:
        assert session.exec(select(func.count()).select_from(MailAccount)).one() == 1


def test_cli_connect_with_a_device_code(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    make_tenant(sqlite_db)
    auth_server.device_interval = 1
    known = set(auth_server.devices)

    def user_on_phone() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            new = [d for code, d in list(auth_server.devices.items()) if code not in known]
            if new:
                auth_server.approve_device(new[0].user_code, oauth_user.email)
                return
            time.sleep(0.05)

    phone = threading.Thread(target=user_on_phone)
    phone.start()
    result = CliRunner().invoke(app, ["account", "connect", "--provider", PROVIDER, "--device"])
    phone.join(5)
    assert result.exit_code == 0, result.output
    assert f"open {auth_server.base_url}/device and enter the code" in result.output
    assert f"({oauth_user.email}) connected with {PROVIDER}" in result.output
    for secret in (*auth_server.access, *auth_server.refresh, *auth_server.devices):
        assert secret not in result.output  # tokens and device codes are never printed
