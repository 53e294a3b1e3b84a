"""The `crm-inbox` command end to end, in subprocesses like a user or a script would run it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from devtools.samples import build_message
from tests.dovecot_fixtures import MailboxUser

CLI = [sys.executable, "-m", "crm_inbox"]


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(sqlite_db: Engine, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CRM_INBOX_DATABASE_URL"] = sqlite_db.url.render_as_string(hide_password=False)
    env.pop("CRM_INBOX_SECRET_KEY", None)  # use (and create) the key file
    env["CRM_INBOX_DATA_DIR"] = str(tmp_path / "cli-data")
    return env


def test_init_add_sync_list(cli_env: dict[str, str], mailbox_user: MailboxUser, tmp_path: Path) -> None:
    d = mailbox_user.dovecot
    d.append(
        mailbox_user.name, "INBOX", build_message(subject="Hello", from_="a@globex.test", to="s@acme.test")
    )
    crowd = [f"c{i}@globex.test" for i in range(101)]
    d.append(mailbox_user.name, "INBOX", build_message(subject="Mass", from_="n@globex.test", to=crowd))
    init = run(cli_env, "init", "--tenant", "Acme", "--admin-email", "boss@acme.test", "--json")
    assert init.returncode == 0, init.stderr
    assert json.loads(init.stdout)["created"] is True
    users = run(cli_env, "access", "list", "boss@acme.test", "--json")  # init made the admin user
    assert users.returncode == 0 and json.loads(users.stdout)["accounts"] == [], users.stderr
    key = Path(cli_env["CRM_INBOX_DATA_DIR"]) / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    common = [
        "account",
        "add",
        "--email",
        "s@acme.test",
        "--imap-host",
        "127.0.0.1",
        "--username",
        mailbox_user.name,
        "--ca-file",
        str(d.ca_file),
        "--imap-port",
        str(d.ssl_port),
        "--json",
    ]
    refused = run(cli_env, *common)
    assert refused.returncode != 0 and "--password-stdin" in refused.stderr
    wrong = run(cli_env, *common, "--password-stdin", stdin="not-it\n")
    assert (
        wrong.returncode == 1
        and "Authentication failed" in wrong.stderr
        and "Nothing was saved" in wrong.stderr
    )
    assert "not-it" not in wrong.stderr + wrong.stdout
    assert (
        "Traceback" not in wrong.stderr
        and "hint: fix the settings, or save anyway with --force" in wrong.stderr
    )
    error = json.loads(wrong.stdout)["error"]  # --json: the error as an object for scripts
    assert (error["code"], error["fields"]["problem"]) == ("connection_check_failed", "authentication")
    env = dict(cli_env, MAILBOX_PASSWORD=mailbox_user.password)
    added = run(env, *common, "--password-env", "MAILBOX_PASSWORD")
    assert added.returncode == 0, added.stderr
    account_id = json.loads(added.stdout)["id"]

    synced = run(cli_env, "sync", "--once", "--json")
    assert synced.returncode == 0, synced.stderr
    summary = json.loads(synced.stdout)
    assert [(s["account_id"], s["status"], s["new_messages"]) for s in summary] == [(account_id, "ok", 1)]
    assert summary[0]["skipped"] == 1 and summary[0]["skipped_reasons"] == {"too_many_recipients": 1}

    listed = run(cli_env, "account", "list", "--json")
    accounts = json.loads(listed.stdout)
    assert accounts[0]["status"] == "ok"
    assert {f["role"]: bool(f["last_success_at"]) for f in accounts[0]["folders"]} == {
        "inbox": True,
        "sent": True,
    }
    skipped = json.loads(run(cli_env, "account", "skipped", "--json").stdout)
    assert [(r["subject"], r["recipient_count"], r["reason"]) for r in skipped] == [
        ("Mass", 101, "too_many_recipients")
    ]
    table = run(cli_env, "account", "list")
    assert "s@acme.test" in table.stdout and "never" not in table.stdout
    # Nothing anywhere shows the password or its ciphertext.
    for output in (init, added, synced, listed, table):
        assert mailbox_user.password not in output.stdout + output.stderr
        assert "secret_encrypted" not in output.stdout


def test_sync_exit_code_reports_failed_accounts(cli_env: dict[str, str], mailbox_user: MailboxUser) -> None:
    assert run(cli_env, "init").returncode == 0
    env = dict(cli_env, PW="wrong")
    added = run(
        env,
        "account",
        "add",
        "--email",
        "x@acme.test",
        "--imap-host",
        "127.0.0.1",
        "--imap-port",
        str(mailbox_user.dovecot.ssl_port),
        "--password-env",
        "PW",
        "--no-check",
    )
    assert added.returncode == 0, added.stderr
    synced = run(cli_env, "sync", "--once")
    assert synced.returncode == 1
    assert "certificate" in synced.stdout and "not trusted" in synced.stdout


def test_demo_command_syncs_a_local_mailbox(tmp_path: Path) -> None:
    """The README's first command, small: its own Dovecot, its own SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_INBOX_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "devtools.demo",
            "--dir",
            str(tmp_path / "demo"),
            "--messages",
            "40",
            "--no-serve",
        ],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "Stored 40 messages" in result.stdout
    assert "1 skipped" in result.stdout and "120 distinct recipients" in result.stdout
    assert (tmp_path / "demo" / "crm-inbox.db").exists()
    assert "dana@acme.test (admin): " in result.stdout and "sam@acme.test (member): " in result.stdout


def _fresh_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CRM_INBOX_DATABASE_URL", None)
    env["CRM_INBOX_DATA_DIR"] = str(tmp_path / "fresh")
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("notaurl", "not a database URL"),
        ("[::1", "not a database URL"),
        ("mysql://u@h/db", "only SQLite and PostgreSQL"),
        ("http://example.test/db", "only SQLite and PostgreSQL"),
        ("postgresql://", "names no database"),
        ("postgresql://127.0.0.1", "names no database"),
        ("sqlite://", "in memory"),
        ("sqlite:///:memory:", "in memory"),
    ],
)
def test_bad_database_url_is_a_clear_error(tmp_path: Path, url: str, words: str) -> None:
    """Issue 12.12: never a traceback; never a schema in libpq's default database or in memory."""
    done = run(_fresh_env(tmp_path, CRM_INBOX_DATABASE_URL=url), "init")
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr and words in done.stderr, done.stderr
    assert "Database ready" not in done.stdout


def test_commands_before_init_and_unreachable_databases(tmp_path: Path, pg_database: str) -> None:
    before = run(_fresh_env(tmp_path), "account", "list")
    assert before.returncode == 1 and "Traceback" not in before.stderr, before.stderr
    assert "not initialised" in before.stderr and "crm-inbox init" in before.stderr
    down_url = "postgresql://crm@127.0.0.1:1/crm"
    down = run(_fresh_env(tmp_path, CRM_INBOX_DATABASE_URL=down_url), "account", "list")
    assert down.returncode == 1 and "Traceback" not in down.stderr, down.stderr
    assert "could not be reached" in down.stderr
    unknown = pg_database.rsplit("/", 1)[0] + "/no_such_database_here"
    missing = run(_fresh_env(tmp_path, CRM_INBOX_DATABASE_URL=unknown), "account", "list")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr, missing.stderr
    assert "could not be reached" in missing.stderr


def test_unusable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = run(_fresh_env(tmp_path, CRM_INBOX_DATA_DIR=str(blocker / "data")), "init")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "data folder" in done.stderr


def test_data_dir_and_database_are_private(tmp_path: Path) -> None:
    """Issue 12.13: synced mail is readable by its owner only."""
    env = _fresh_env(tmp_path)
    env.pop("CRM_INBOX_SECRET_KEY", None)
    done = run(env, "init")
    assert done.returncode == 0, done.stderr
    data = Path(env["CRM_INBOX_DATA_DIR"])
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for path in data.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_rotate_key(cli_env: dict[str, str], mailbox_user: MailboxUser) -> None:
    """Issue 12.10: `secrets rotate-key` re-encrypts every password with a new key file; the
    sync then works with the new key, and the old key is kept aside (0600)."""
    d = mailbox_user.dovecot
    d.append(mailbox_user.name, "INBOX", build_message(subject="Hi", from_="a@globex.test", to="s@acme.test"))
    assert run(cli_env, "init").returncode == 0
    env = dict(cli_env, MAILBOX_PASSWORD=mailbox_user.password)
    added = run(
        env,
        *("account", "add", "--email", "s@acme.test", "--imap-host", "127.0.0.1"),
        *("--username", mailbox_user.name, "--ca-file", str(d.ca_file), "--imap-port", str(d.ssl_port)),
        *("--password-env", "MAILBOX_PASSWORD"),
    )
    assert added.returncode == 0, added.stderr
    key_file = Path(cli_env["CRM_INBOX_DATA_DIR"]) / "secret.key"
    before = key_file.read_bytes()
    rotated = run(cli_env, "secrets", "rotate-key", "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["accounts"] == 1
    assert key_file.read_bytes() != before
    old = Path(json.loads(rotated.stdout)["old_key_file"])
    assert old.read_bytes() == before and stat.S_IMODE(old.stat().st_mode) == 0o600
    synced = run(cli_env, "sync", "--once", "--json")
    assert synced.returncode == 0, synced.stderr
    [summary] = json.loads(synced.stdout)
    assert summary["status"] == "ok" and summary["new_messages"] == 1


def test_run_serves_the_inbox_and_stops_on_sigterm(cli_env: dict[str, str]) -> None:
    """`crm-inbox run`: the scheduler, the send queue and the shared inbox in one process."""
    import signal
    import socket
    import time
    import urllib.request

    assert run(cli_env, "init", "--tenant", "Acme").returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "run", "--port", str(port)], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                    status = response.status
            except OSError:
                time.sleep(0.2)
        assert status == 200
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
