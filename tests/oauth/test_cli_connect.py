"""`crm-inbox account connect` in a subprocess: it prints the provider's URL and waits on a
loopback port; the "browser" (here: HTTP requests) allows access and follows the redirect back;
the command connects the mailbox. Then `account list/show/test/disconnect`. No token printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from core.settings import Settings
from crm_inbox.cli import app
from tests.factories import make_tenant
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import PROVIDER, OAuthUser
from tests.oauth.consent import allow

CLI = [sys.executable, "-m", "crm_inbox"]


def test_cli_connects_by_consent_and_shows_the_account(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser, tmp_path: Path
) -> None:
    make_tenant(sqlite_db)
    env = dict(os.environ)  # the test's settings: this database, key and provider
    proc = subprocess.Popen(
        [*CLI, "account", "connect", "--provider", PROVIDER, "--timeout", "60"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    printed = []
    url = ""
    for line in proc.stdout:
        printed.append(line)
        if line.startswith(auth_server.base_url):
            url = line.strip()
        if line.startswith("Waiting"):
            break
    assert url, printed
    callback = allow(url, oauth_user.email)
    assert callback.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(callback, timeout=10) as page:
        assert b"return to the terminal" in page.read()
    rest, errors = proc.communicate(timeout=60)
    assert proc.returncode == 0, errors
    output = "".join(printed) + rest + errors
    assert f"({oauth_user.email}) connected with {PROVIDER}" in output

    def run(*args: str) -> Result:
        # In this process (a subprocess each costs seconds of imports on a busy machine).
        return CliRunner().invoke(app, list(args))

    listed = run("account", "list", "--json")
    (account,) = json.loads(listed.stdout)
    assert account["oauth"]["provider"] == PROVIDER and account["oauth"]["state"] == "connected"
    shown = run("account", "show", str(account["id"]))
    assert f"login: OAuth {PROVIDER}" in shown.stdout and "scopes: mail openid email" in shown.stdout
    tested = run("account", "test", str(account["id"]))
    assert tested.exit_code == 0, tested.output
    gone = run("account", "disconnect", str(account["id"]))
    assert gone.exit_code == 0 and "revoked its tokens" in gone.stdout, gone.output
    output += listed.output + shown.output + tested.output + gone.output
    for token in (*auth_server.access, *auth_server.refresh):
        assert token not in output
    # An unknown provider: a clear error, no traceback.
    refused = run("account", "connect", "--provider", "nope", "--timeout", "1")
    assert refused.exit_code != 0 and "nope" in refused.output and "Traceback" not in refused.output
