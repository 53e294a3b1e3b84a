"""Sync benchmark: `crm-inbox sync --once` against a raw imapclient FETCH of the same mailbox.

    .venv/bin/python bench/sync_bench.py                 # 20,000 messages (issue target)
    .venv/bin/python bench/sync_bench.py --messages 2000 # quick look

One run, one machine, one Dovecot: a generated mailbox (mixed MIME, threads, attachments, a few
large messages) is written into a local Dovecot's maildir, indexed once, then measured:

* baseline: a raw imapclient session fetching every body (BODY.PEEK[], batches of 200) = the
  limit of what any sync can do against this server;
* ours: `crm-inbox sync --once` in a fresh process into a fresh SQLite file (parse, store,
  thread, link, commit per batch), its wall time and peak RSS (from wait4);
* memory vs size: the same sync of a mailbox a quarter the size, to see whether peak RSS grows
  with the mailbox;
* the no-change second sync: in-process (`SyncEngine.sync_account`), and as a whole command.

Results are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet
from imapclient import IMAPClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402

from core.caller import Caller  # noqa: E402
from core.db import make_engine, migrate, session_scope  # noqa: E402
from core.secrets import SecretBox  # noqa: E402
from core.settings import reset_settings  # noqa: E402
from core.types import Security  # noqa: E402
from crm import mailboxes, tenants  # noqa: E402
from devtools.devmail import LocalDovecot  # noqa: E402
from devtools.samples import generate_mailbox  # noqa: E402


@dataclass
class Mailbox:
    user: str
    password: str
    messages: int
    inbox: int
    sent: int
    bytes: int


def load(dovecot: LocalDovecot, count: int, seed: int) -> Mailbox:
    user = f"bench{count}"
    password = secrets.token_urlsafe(12)
    dovecot.add_user(user, password)
    by_folder: dict[str, list[bytes]] = {"INBOX": [], "Sent": []}
    total = 0
    for sample in generate_mailbox(count, seed=seed, large_every=997, large_size=3_000_000):
        by_folder[sample.folder].append(sample.raw)
        total += len(sample.raw)
    for folder, raws in by_folder.items():
        dovecot.load_maildir(user, folder, raws)
    # Let Dovecot index the maildir once, so neither measurement pays for it.
    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        client.login(user, password)
        for folder in by_folder:
            client.select_folder(folder, readonly=True)
            client.search(["ALL"])
    return Mailbox(user, password, count, len(by_folder["INBOX"]), len(by_folder["Sent"]), total)


def raw_fetch(dovecot: LocalDovecot, box: Mailbox) -> tuple[float, int]:
    """The limit: TLS login, then every body of INBOX and Sent, nothing done with them."""
    import ssl

    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    started = time.perf_counter()
    fetched = 0
    with IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context) as client:
        client.login(box.user, box.password)
        for folder in ("INBOX", "Sent"):
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            for start in range(0, len(uids), 200):
                data = client.fetch(uids[start : start + 200], ["BODY.PEEK[]"])
                fetched += sum(1 for item in data.values() if b"BODY[]" in item)
    return time.perf_counter() - started, fetched


def setup_db(workdir: Path, dovecot: LocalDovecot, box: Mailbox) -> tuple[dict[str, str], int]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        CRM_INBOX_DATA_DIR=str(workdir),
        CRM_INBOX_DATABASE_URL=f"sqlite:///{workdir / 'bench.db'}",
        CRM_INBOX_ALLOW_PRIVATE_HOSTS="true",
        CRM_INBOX_SECRET_KEY=Fernet.generate_key().decode(),
    )
    os.environ.update(env)
    reset_settings()
    engine = make_engine(env["CRM_INBOX_DATABASE_URL"])
    migrate(engine)
    with session_scope(engine) as session:
        tenant = tenants.create_tenant(
            session=session, name="Bench", account_quota=10, own_domains=["acme.test"]
        )
        account = mailboxes.add_account(
            session=session,
            caller=Caller.operator(tenant.id or 0),
            data=mailboxes.AccountInput(
                email="sales@acme.test",
                imap_host=dovecot.host,
                imap_port=dovecot.ssl_port or 0,
                imap_security=Security.TLS,
                username=box.user,
                ca_file=str(dovecot.ca_file),
            ),
            password=SecretStr(box.password),
            box=SecretBox.from_settings(),
        )
        account_id = account.id or 0
    engine.dispose()
    return env, account_id


def run_cli(env: dict[str, str], *args: str) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MiB, and stdout of one `crm-inbox` process.

    Peak RSS is sampled every 20 ms from /proc (via psutil) over the process and its children
    (the parse worker), not taken from wait4's ru_maxrss: that figure survives exec and would
    report the size of this benchmark process at fork time."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm_inbox", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    watched = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss + sum(
                c.memory_info().rss for c in watched.children(recursive=True)
            )
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.02)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"crm-inbox {' '.join(args)} failed:\n{err.decode()}\n{out.decode()}")
    return elapsed, peak / 2**20, out.decode()


def no_change_in_process(env: dict[str, str], account_id: int, rounds: int = 5) -> float:
    from sync.account_pass import SyncEngine

    os.environ.update(env)
    reset_settings()
    engine = make_engine(env["CRM_INBOX_DATABASE_URL"])
    sync = SyncEngine(db=engine)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        summary = sync.sync_account(account_id)
        timings.append(time.perf_counter() - started)
        assert summary.new_messages == 0 and summary.status == "ok", summary
    engine.dispose()
    return sorted(timings)[len(timings) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    small_count = max(args.messages // 4, 500)

    with (
        tempfile.TemporaryDirectory(prefix="crm-inbox-bench-") as tmp,
        LocalDovecot(Path(tmp) / "dovecot") as dovecot,
    ):
        t0 = time.perf_counter()
        big = load(dovecot, args.messages, seed=11)
        small = load(dovecot, small_count, seed=12)
        print(
            f"mailboxes loaded and indexed in {time.perf_counter() - t0:.1f} s "
            f"({big.messages} messages, {big.bytes / 2**20:.0f} MiB; {small.messages} messages)"
        )

        raw_seconds, fetched = raw_fetch(dovecot, big)
        assert fetched == big.messages, (fetched, big.messages)

        env, account_id = setup_db(Path(tmp) / "big", dovecot, big)
        ours_seconds, ours_rss, _ = run_cli(env, "sync", "--once", "--json")
        second_cli, _, _ = run_cli(env, "sync", "--once", "--json")
        second_inproc = no_change_in_process(env, account_id)

        small_env, _ = setup_db(Path(tmp) / "small", dovecot, small)
        _, small_rss, _ = run_cli(small_env, "sync", "--once", "--json")

    raw_rate = big.messages / raw_seconds
    ours_rate = big.messages / ours_seconds
    rows = [
        (
            "mailbox",
            f"{big.messages} messages ({big.inbox} INBOX, {big.sent} Sent), {big.bytes / 2**20:.0f} MiB",
        ),
        ("raw imapclient FETCH (baseline)", f"{raw_seconds:.1f} s, {raw_rate:.0f} msg/s"),
        ("crm-inbox sync --once (first sync)", f"{ours_seconds:.1f} s, {ours_rate:.0f} msg/s"),
        ("ratio ours / raw", f"{ours_rate / raw_rate:.2f} (target >= 0.5)"),
        (f"peak RSS, {big.messages} messages", f"{ours_rss:.0f} MiB"),
        (f"peak RSS, {small.messages} messages", f"{small_rss:.0f} MiB"),
        ("no-change second sync, in process (median of 5)", f"{second_inproc * 1000:.0f} ms (target < 1 s)"),
        (
            "no-change second sync, whole command",
            f"{second_cli:.2f} s (includes interpreter start and imports)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if not args.no_results:
        results = ROOT / "bench" / "RESULTS.md"
        if not results.exists():
            results.write_text("# Benchmark results\n\nEach section is appended by a benchmark run.\n")
        with results.open("a") as handle:
            when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            handle.write(f"\n## Sync ({when}, `bench/sync_bench.py --messages {args.messages}`)\n\n")
            handle.write(f"Machine: {os.cpu_count()} cores; Dovecot on loopback over TLS; SQLite.\n\n")
            handle.write("| measure | result |\n| --- | --- |\n")
            for key, value in rows:
                handle.write(f"| {key} | {value} |\n")


if __name__ == "__main__":
    main()
