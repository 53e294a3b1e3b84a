"""`crm-inbox user` and `crm-inbox token` end to end, as a subprocess: the password never in
argv or output, a token printed once and usable against the API, deactivation ends it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from inbox_api.app import create_app

CLI = [sys.executable, "-m", "crm_inbox"]
PASSWORD = "a long enough secret 42"


@pytest.fixture
def env(sqlite_db: Engine, tmp_path: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ["CRM_INBOX_DATABASE_URL"] = sqlite_db.url.render_as_string(hide_password=False)
    environ["CRM_INBOX_DATA_DIR"] = str(tmp_path / "data")
    return environ


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


def test_users_and_tokens(env: dict[str, str]) -> None:
    assert run(env, "init", "--tenant", "Acme", "--admin-email", "boss@acme.test").returncode == 0
    added = run(
        env,
        "user",
        "add",
        "sam@acme.test",
        "--name",
        "Sam Seller",
        "--password-stdin",
        "--json",
        stdin=PASSWORD + "\n",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["email"] == "sam@acme.test"
    assert PASSWORD not in added.stdout + added.stderr
    duplicate = run(env, "user", "add", "SAM@acme.test")
    assert (
        duplicate.returncode == 1
        and "already a user" in duplicate.stderr
        and "Traceback" not in duplicate.stderr
    )
    bad_role = run(env, "user", "add", "x@acme.test", "--role", "owner")
    assert bad_role.returncode == 2

    created = run(env, "token", "create", "sam@acme.test", "--name", "reports", "--json")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["secret"]
    listed = run(env, "token", "list", "sam@acme.test", "--json")
    assert secret not in listed.stdout and json.loads(listed.stdout)[0]["name"] == "reports"

    with TestClient(create_app()) as client:
        headers = {"Authorization": f"Bearer {secret}"}
        me = client.get("/api/me", headers=headers)
        assert me.status_code == 200 and me.json()["role"] == "member"
        login = client.post("/api/auth/login", json={"email": "sam@acme.test", "password": PASSWORD})
        assert login.status_code == 200
        assert run(env, "user", "deactivate", "sam@acme.test").returncode == 0
        assert client.get("/api/me", headers=headers).status_code == 401
        assert client.get("/api/threads").status_code == 401  # the browser session too

    users = json.loads(run(env, "user", "list", "--json").stdout)
    assert {u["email"]: u["active"] for u in users} == {"boss@acme.test": True, "sam@acme.test": False}
    last_admin = run(env, "user", "deactivate", "boss@acme.test")
    assert last_admin.returncode == 1 and "last active admin" in last_admin.stderr
    revoked = run(env, "token", "revoke", str(json.loads(listed.stdout)[0]["id"]))
    assert revoked.returncode == 0
