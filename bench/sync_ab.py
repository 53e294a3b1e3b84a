"""A/B of the first sync between two checkouts, in process, alternated: for a loaded machine.

    PYTHONPATH=$PWD .venv/bin/python -m bench.sync_ab --before DIR [--messages 1500] [--rounds 4]

`bench/sync_bench.py` times whole `crm-inbox sync --once` commands: interpreter start and imports
(over a second of CPU, several under load) weigh on a short mailbox, and on a busy machine one
run of the same code varies by half. Here each round syncs the same Dovecot mailbox into a fresh
SQLite database once with each checkout (the order alternating between rounds), in a fresh
interpreter that is timed from the sync call on: wall time, CPU of the syncing process, CPU of
its parse workers, the load average, and CPU per stage (`core.stages`). Medians are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.sync_bench import ROOT, load, setup_db
from devtools.devmail import LocalDovecot

# Runs inside the checkout under test (its own code on sys.path), prints one JSON line.
RUN_ONE = """
import json, os, sys, time
import psutil
from core import stages
from core.db import make_engine
from core.settings import reset_settings
from sync.account_pass import SyncEngine

reset_settings()
engine = make_engine(os.environ["CRM_INBOX_DATABASE_URL"])
sync = SyncEngine(db=engine)
stages.reset()
wall, cpu = time.perf_counter(), time.process_time()
summary = sync.sync_account(int(sys.argv[1]))
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
workers = 0.0
for child in psutil.Process().children(recursive=True):
    try:
        times = child.cpu_times()
        workers += times.user + times.system
    except psutil.Error:
        pass
sync.parser.close()
print(json.dumps({"status": summary.status, "new": summary.new_messages, "wall": wall, "cpu": cpu,
                  "workers": workers, "stages": stages.snapshot(), "load": os.getloadavg()[0]}))
"""


def run_one(checkout: Path, env: dict[str, str], account_id: int) -> dict[str, object]:
    env = dict(env, PYTHONPATH=str(checkout))
    done = subprocess.run(
        [sys.executable, "-c", RUN_ONE, str(account_id)],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: {done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier version")
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", default="1", help="CRM_INBOX_PARSE_WORKERS for both")
    args = parser.parse_args()
    n = args.messages
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    runs: dict[str, list[dict[str, object]]] = {name: [] for name in checkouts}
    with (
        tempfile.TemporaryDirectory(prefix="crm-inbox-ab-") as tmp,
        LocalDovecot(Path(tmp) / "dovecot") as dovecot,
    ):
        box = load(dovecot, n, seed=11)
        for round_ in range(args.rounds):
            order = list(checkouts.items())
            for name, checkout in order if round_ % 2 == 0 else order[::-1]:
                env, account_id = setup_db(Path(tmp) / f"{name}{round_}", dovecot, box)
                env["CRM_INBOX_PARSE_WORKERS"] = args.workers
                run = run_one(checkout, env, account_id)
                if run["status"] != "ok" or run["new"] != n:
                    raise SystemExit(f"{name}: {run}")
                runs[name].append(run)
                wall, cpu, workers = (float(run[k]) for k in ("wall", "cpu", "workers"))  # type: ignore[arg-type]
                print(
                    f"{name:6} round {round_ + 1}: {wall:.2f} s ({n / wall:.0f} msg/s), CPU us/message: "
                    f"syncing process {cpu / n * 1e6:.0f}, workers {workers / n * 1e6:.0f}; "
                    f"load {float(run['load']):.1f}",  # type: ignore[arg-type]
                    flush=True,
                )
    for name, done in runs.items():

        def median(key: str, of: list[dict[str, object]] = done) -> float:
            return statistics.median(float(r[key]) for r in of)  # type: ignore[arg-type]

        tree = statistics.median(float(r["cpu"]) + float(r["workers"]) for r in done)  # type: ignore[arg-type]
        names = sorted({s for r in done for s in r["stages"]})  # type: ignore[attr-defined]
        per_stage = {
            s: statistics.median(r["stages"].get(s, 0.0) for r in done) / n * 1e6  # type: ignore[attr-defined]
            for s in names
        }
        print(
            f"{name}: median {median('wall'):.2f} s ({n / median('wall'):.0f} msg/s); CPU us/message: "
            f"syncing process {median('cpu') / n * 1e6:.0f}, with workers {tree / n * 1e6:.0f}; stages "
            + ", ".join(f"{s} {us:.0f}" for s, us in per_stage.items())
        )


if __name__ == "__main__":
    main()
