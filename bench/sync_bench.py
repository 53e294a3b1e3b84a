"""Sync benchmark: a first `crm-inbox sync --once` against bare downloads of the same mailbox.

    .venv/bin/python bench/sync_bench.py                  # 20,000 messages (issue target)
    .venv/bin/python bench/sync_bench.py --messages 5000  # quicker

One run, one machine, one Dovecot (over TLS on loopback): a generated mailbox (mixed MIME, threads,
attachments, a few 3 MB messages) is written into a local Dovecot's maildir and indexed once,
then measured:

* the limits: every body fetched (BODY.PEEK[], batches of 200) by bare `imaplib`, by bare
  `imapclient` as it ships (its `debug` left as it is), and by `mbsync` into a maildir when it is
  installed (Debian's `isync` package; optional, only this benchmark uses it);
* ours: `crm-inbox sync --once` in a fresh process into a fresh database, on SQLite and on
  PostgreSQL (127.0.0.1:5432, as the tests use; skipped when unreachable), wall time and peak RSS
  of the whole process tree (parse workers included), and the ratios to the limits;
* peak RSS at a second, smaller mailbox size, to see whether memory grows with the mailbox;
* CPU microseconds per message per stage (`core.stages`), from a first sync of the smaller
  mailbox run in this process with parsing in-process, so all of it is attributable;
* the no-change second sync (in process and as a whole command) and the CLI's import time.

Results are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


FOLDERS = ("INBOX", "Sent")
PG_ADMIN_URL = os.environ.get(
    "CRM_INBOX_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def imapclient_fetch(dovecot: LocalDovecot, box: Mailbox) -> tuple[float, int, float]:
    """A limit: TLS login, then every body of INBOX and Sent through imapclient as it ships
    (its imaplib `debug` untouched), nothing done with them."""
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    started, cpu = time.perf_counter(), time.process_time()
    fetched = 0
    with IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context) as client:
        client.login(box.user, box.password)
        for folder in FOLDERS:
            client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            for start in range(0, len(uids), 200):
                data = client.fetch(uids[start : start + 200], ["BODY.PEEK[]"])
                fetched += sum(1 for item in data.values() if b"BODY[]" in item)
    return time.perf_counter() - started, fetched, time.process_time() - cpu


def imaplib_fetch(dovecot: LocalDovecot, box: Mailbox) -> tuple[float, int]:
    """The lower limit: the same download through the standard library's imaplib alone."""
    context = ssl.create_default_context(cafile=str(dovecot.ca_file))
    started = time.perf_counter()
    fetched = 0
    client = imaplib.IMAP4_SSL(dovecot.host, dovecot.ssl_port or 0, ssl_context=context)
    with client:  # logs out at the end
        client.login(box.user, box.password)
        for folder in FOLDERS:
            client.select(folder, readonly=True)
            _, found = client.uid("SEARCH", "ALL")
            uids = found[0].split()
            for start in range(0, len(uids), 200):
                _, data = client.uid("FETCH", b",".join(uids[start : start + 200]).decode(), "(BODY.PEEK[])")
                fetched += sum(1 for item in data if isinstance(item, tuple))
    return time.perf_counter() - started, fetched


def mbsync_fetch(dovecot: LocalDovecot, box: Mailbox, workdir: Path) -> tuple[float, int] | None:
    """mbsync (isync) pulling both folders into a fresh maildir, when installed: a mature C
    client that only writes files. The password sits in its config file (mode 0600, in the
    benchmark's temporary directory), never on a command line."""
    binary = shutil.which("mbsync")
    if binary is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    maildir = workdir / "maildir"
    maildir.mkdir()
    config = workdir / "mbsyncrc"
    config.touch(mode=0o600)
    config.write_text(
        # The test CA's certificate names localhost and 127.0.0.1 in subjectAltName only; mbsync
        # checks DNS names (or a common name, which it lacks), so it connects by name.
        f"IMAPAccount bench\nHost localhost\nPort {dovecot.ssl_port}\nUser {box.user}\n"
        f'Pass "{box.password}"\nSSLType IMAPS\nCertificateFile {dovecot.ca_file}\n\n'
        "IMAPStore remote\nAccount bench\n\n"
        f"MaildirStore local\nPath {maildir}/\nInbox {maildir}/INBOX\nSubFolders Verbatim\n\n"
        "Channel bench\nFar :remote:\nNear :local:\nPatterns INBOX Sent\nCreate Near\nSync Pull\n"
        f"SyncState {workdir}/state/\n"
    )
    (workdir / "state").mkdir()
    started = time.perf_counter()
    done = subprocess.run([binary, "-q", "-c", str(config), "bench"], capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        print(f"mbsync failed ({done.returncode}): {done.stderr.decode(errors='replace')[:500]}")
        return None
    fetched = sum(1 for folder in maildir.rglob("*") if folder.parent.name in ("cur", "new"))
    return elapsed, fetched


def setup_db(
    workdir: Path, dovecot: LocalDovecot, box: Mailbox, url: str | None = None
) -> tuple[dict[str, str], int]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        CRM_INBOX_DATA_DIR=str(workdir),
        CRM_INBOX_DATABASE_URL=url or f"sqlite:///{workdir / 'bench.db'}",
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


def postgres_database() -> str | None:
    """A fresh database on the local PostgreSQL (dropped by `drop_postgres`), or None."""
    from sqlalchemy import create_engine, text

    name = f"crm_inbox_bench_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:
        print(f"PostgreSQL skipped: {type(exc).__name__}")
        return None
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


@dataclass
class Run:
    seconds: float
    rss_mib: float  # peak of the whole process tree
    cpu_seconds: float  # user + system of the whole process tree
    stdout: str


def run_cli(env: dict[str, str], *args: str, cwd: Path | None = None) -> Run:
    """Wall seconds, peak RSS, CPU time and stdout of one `crm-inbox` process.

    Peak RSS is sampled every 20 ms from /proc (via psutil) over the process and its children
    (the parse workers), not taken from wait4's ru_maxrss: that figure survives exec and would
    report the size of this benchmark process at fork time. The peak of each process is
    printed too, to see where memory goes. CPU time is the last sample of each process (a
    worker's last 20 ms may be missed): on a loaded machine it says more than wall time."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "crm_inbox", *args],
        env=env,
        cwd=cwd or ROOT,  # `python -m` puts the working directory first on sys.path
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watched = psutil.Process(proc.pid)
    peak = 0
    each: dict[int, int] = {}
    cpu: dict[int, float] = {}
    while proc.poll() is None:
        sizes: dict[int, int] = {}
        try:
            for member in [watched, *watched.children(recursive=True)]:
                sizes[member.pid] = member.memory_info().rss
                times = member.cpu_times()
                cpu[member.pid] = times.user + times.system
        except psutil.Error:
            pass
        for pid, rss in sizes.items():
            each[pid] = max(each.get(pid, 0), rss)
        peak = max(peak, sum(sizes.values()))
        time.sleep(0.02)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"crm-inbox {' '.join(args)} failed:\n{err.decode()}\n{out.decode()}")
    print(f"  peak RSS per process (MiB): {[round(rss / 2**20) for rss in each.values()]}")
    return Run(elapsed, peak / 2**20, sum(cpu.values()), out.decode())


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


# The breakdown, in order: (label, stage names summed; a negative name is subtracted).
STAGE_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MIME parse (bounded; accelerator when installed, else stdlib feedparser)", ("parse.mime",)),
    ("header pre-fetch: FETCH of sizes, flags, 7 fields", ("fetch.headers",)),
    ("header pre-fetch: parsing the 7 fields", ("parse.headers",)),
    ("body FETCH through imapclient", ("fetch.bodies",)),
    ("rows for the store", ("store.rows",)),
    ("threading", ("store.threading",)),
    ("address index, linking, assignment", ("store.linking",)),
    (
        "SQL writes, lookups, commit (the rest of the store)",
        ("store", "-store.rows", "-store.threading", "-store.linking"),
    ),
)


def stage_breakdown(
    env: dict[str, str], account_id: int, messages: int
) -> tuple[list[tuple[str, float]], float]:
    """CPU us/message per stage of a first sync run here, parsing in-process (all CPU in this
    process, told apart per thread), and the process's total CPU us/message."""
    from core import stages
    from sync.account_pass import SyncEngine

    os.environ.update(env)
    os.environ["CRM_INBOX_PARSE_WORKERS"] = "0"
    reset_settings()
    engine = make_engine(env["CRM_INBOX_DATABASE_URL"])
    sync = SyncEngine(db=engine)
    stages.reset()
    cpu = time.process_time()
    summary = sync.sync_account(account_id)
    cpu = time.process_time() - cpu
    engine.dispose()
    del os.environ["CRM_INBOX_PARSE_WORKERS"]
    reset_settings()
    assert summary.status == "ok" and summary.new_messages > 0, summary
    spent = stages.snapshot()
    rows = []
    for label, names in STAGE_ROWS:
        total = sum(-spent.get(n[1:], 0.0) if n.startswith("-") else spent.get(n, 0.0) for n in names)
        rows.append((label, total / messages * 1e6))
    return rows, cpu / messages * 1e6


def import_seconds(env: dict[str, str], rounds: int = 3, pycache: Path | None = None) -> float:
    """What `crm-inbox sync --once` imports before it syncs (median of fresh interpreters).

    `pycache`: with the bytecode cached there (one run first fills it), as an installed package
    has it; without, the environment decides (PYTHONDONTWRITEBYTECODE, set in some sandboxes
    and CI, makes every run compile this project's ~90 modules again)."""
    code = (
        "import time; t = time.perf_counter(); import crm_inbox.cli as cli, sync.account_pass; "
        "cli.load(cli.modules_for(['sync', '--once'])) if hasattr(cli, 'modules_for') else None; "
        "print(time.perf_counter() - t)"
    )
    if pycache is not None:
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    runs = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
        runs.append(float(done.stdout.decode().strip()))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=0, help="second size (default: a quarter)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of an earlier version (e.g. `git archive REV | tar -x -C DIR`): its first "
        "sync of the same mailbox is measured in the same run, for a before/after under equal load",
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --before: before/ours pairs, alternated")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    small_count = args.small or max(args.messages // 4, 500)

    rows: list[tuple[str, str]] = []
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
        n = big.messages
        client_s, fetched, client_cpu = imapclient_fetch(dovecot, big)
        assert fetched == n, (fetched, n)
        imaplib_s, fetched = imaplib_fetch(dovecot, big)
        assert fetched == n, (fetched, n)
        mbsync = mbsync_fetch(dovecot, big, Path(tmp) / "mbsync")
        client_rate = n / client_s

        def rate(seconds: float) -> str:
            return f"{seconds:.1f} s, {n / seconds:.0f} msg/s, {client_s / seconds:.2f}x imapclient"

        rows += [
            ("mailbox", f"{n} messages ({big.inbox} INBOX, {big.sent} Sent), {big.bytes / 2**20:.0f} MiB"),
            ("limit: bare imaplib FETCH", rate(imaplib_s)),
            (
                "limit: bare imapclient FETCH (as shipped: the baseline)",
                f"{client_s:.1f} s, {client_rate:.0f} msg/s, CPU {client_cpu / n * 1e6:.0f} us/message",
            ),
            (
                "limit: mbsync (isync) into a maildir",
                rate(mbsync[0])
                if mbsync
                else "failed (see above)"
                if shutil.which("mbsync")
                else "not installed (Debian package isync)",
            ),
        ]
        print("\n".join(f"{k}: {v}" for k, v in rows))

        env, account_id = setup_db(Path(tmp) / "big", dovecot, big)
        ours = run_cli(env, "sync", "--once", "--json")
        ours_s, ours_rss = ours.seconds, ours.rss_mib
        rows.append(("ours, SQLite: crm-inbox sync --once (first sync)", rate(ours_s) + " (target >= 0.6x)"))
        rows.append(
            (
                "ours, SQLite: CPU of the process tree",
                f"{ours.cpu_seconds / n * 1e6:.0f} us/message (load {os.getloadavg()[0]:.1f})",
            )
        )
        print(rows[-1])
        if args.before is not None:
            # Alternated with ours (before, ours, before, ...), each into a fresh database, so a
            # load that changes during the run falls on both; the load average is printed at each.
            label = args.before.name
            for round_ in range(args.rounds):
                before_env, _ = setup_db(Path(tmp) / f"before{round_}", dovecot, big)
                before_env["PYTHONPATH"] = str(args.before.resolve())
                before = run_cli(before_env, "sync", "--once", "--json", cwd=args.before)
                rows.append(
                    (
                        f"before ({label}), SQLite, round {round_ + 1}",
                        f"{rate(before.seconds)}, CPU {before.cpu_seconds / n * 1e6:.0f} us/message, "
                        f"peak RSS {before.rss_mib:.0f} MiB, load {os.getloadavg()[0]:.1f}",
                    )
                )
                print(rows[-1])
                if round_ + 1 < args.rounds:
                    again_env, _ = setup_db(Path(tmp) / f"ours{round_}", dovecot, big)
                    again = run_cli(again_env, "sync", "--once", "--json")
                    rows.append(
                        (
                            f"ours, SQLite, round {round_ + 2}",
                            f"{rate(again.seconds)}, CPU {again.cpu_seconds / n * 1e6:.0f} us/message, "
                            f"peak RSS {again.rss_mib:.0f} MiB, load {os.getloadavg()[0]:.1f}",
                        )
                    )
                    print(rows[-1])
        second_cli = run_cli(env, "sync", "--once", "--json").seconds
        second_inproc = no_change_in_process(env, account_id)
        imports = import_seconds(env)
        imports_cached = import_seconds(env, pycache=Path(tmp) / "pycache")

        if not args.no_postgres and (url := postgres_database()) is not None:
            try:
                pg_env, _ = setup_db(Path(tmp) / "pg", dovecot, big, url)
                pg = run_cli(pg_env, "sync", "--once", "--json")
                rows.append(
                    ("ours, PostgreSQL: crm-inbox sync --once", rate(pg.seconds) + " (target >= 0.4x)")
                )
                rows.append(
                    (
                        "ours, PostgreSQL: CPU of the process tree",
                        f"{pg.cpu_seconds / n * 1e6:.0f} us/message",
                    )
                )
                rows.append((f"peak RSS, PostgreSQL, {n} messages", f"{pg.rss_mib:.0f} MiB"))
                print(rows[-3:])
            finally:
                drop_postgres(url)

        small_env, _ = setup_db(Path(tmp) / "small", dovecot, small)
        small_rss = run_cli(small_env, "sync", "--once", "--json").rss_mib
        rows += [
            (f"peak RSS, SQLite, {n} messages (whole process tree)", f"{ours_rss:.0f} MiB (target < 200)"),
            (f"peak RSS, SQLite, {small.messages} messages", f"{small_rss:.0f} MiB"),
            (
                "no-change second sync, in process (median of 5)",
                f"{second_inproc * 1000:.0f} ms (target < 50)",
            ),
            (
                "no-change second sync, whole command",
                f"{second_cli:.2f} s (interpreter start and imports included)",
            ),
            ("CLI imports for sync --once (median of 3)", f"{imports:.2f} s (target < 0.5)"),
            ("CLI imports for sync --once, bytecode cached (as installed)", f"{imports_cached:.2f} s"),
        ]
        breakdown_env, breakdown_account = setup_db(Path(tmp) / "stages", dovecot, small)
        stage_rows, total_cpu = stage_breakdown(breakdown_env, breakdown_account, small.messages)
    for label, us in stage_rows:
        rows.append((f"CPU us/message: {label}", f"{us:.0f}"))
    rows.append(("CPU us/message: whole process (parse in-process)", f"{total_cpu:.0f}"))
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if not args.no_results:
        results = ROOT / "bench" / "RESULTS.md"
        with results.open("a") as handle:
            when = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            handle.write(
                f"\n## Sync, first sync vs bare downloads ({when}, "
                f"`bench/sync_bench.py --messages {args.messages}`)\n\n"
            )
            handle.write(
                f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
                "Dovecot on loopback over TLS. CPU per stage from a first sync of the "
                f"{small.messages}-message mailbox in process, parsing in-process.\n\n"
            )
            handle.write("| measure | result |\n| --- | --- |\n")
            for key, value in rows:
                handle.write(f"| {key} | {value} |\n")


if __name__ == "__main__":
    main()
