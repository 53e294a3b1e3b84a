"""`crm-inbox account add-forwarding`, `crm-inbox inbound` and `crm-inbox run` receiving mail,
in subprocesses like an operator would run them."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.sync.inbound_harness import free_port, mail
from tests.test_cli import CLI, run


@pytest.fixture
def cli_env(sqlite_db: Engine, tmp_path: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["CRM_INBOX_DATABASE_URL"] = sqlite_db.url.render_as_string(hide_password=False)
    env["CRM_INBOX_DATA_DIR"] = str(tmp_path / "cli-data")
    env["CRM_INBOX_INBOUND_DOMAIN"] = "in.example.com"
    env["CRM_INBOX_INBOUND_PORT"] = str(free_port())
    return env


def _send_when_up(port: int, rcpt: str, raw: bytes, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, "the listener exited"
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                assert client.sendmail("jane.doe@acme.example", [rcpt], raw) == {}
                return
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_add_forwarding_then_run_receives(cli_env: dict[str, str]) -> None:
    """`crm-inbox run` starts the listener when inbound is enabled (`crm-inbox inbound` runs the
    same `InboundServer` alone; each CLI start costs seconds, so one of them is run here)."""
    assert run(cli_env, "init", "--tenant", "Acme").returncode == 0
    added = run(cli_env, "account", "add-forwarding", "--name", "Sales", "--local-part", "sales", "--json")
    assert added.returncode == 0, added.stderr
    channel = json.loads(added.stdout)
    assert channel["address"].startswith("sales-") and channel["address"].endswith("@in.example.com")
    env = dict(cli_env, CRM_INBOX_INBOUND_ENABLED="true")
    process = subprocess.Popen(
        [*CLI, "run", "--no-serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _send_when_up(int(env["CRM_INBOX_INBOUND_PORT"]), channel["address"], mail(), process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    listed = run(cli_env, "account", "forwarding", "deliveries", str(channel["id"]), "--json")
    [delivery] = json.loads(listed.stdout)
    assert delivery["outcome"] == "stored" and delivery["credited_from"] == "jane.doe@acme.example"
