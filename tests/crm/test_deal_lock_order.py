"""A deal's stage change takes the tenant's lock before it touches the deal's row: the order the
sync and the backfill take (tenant, then rows). The 0026 stage trigger takes the tenant's lock
too, but only after the UPDATE has locked the deal, so without the service taking it first a
user moving a deal while a batch linking mail to it holds the tenant's lock could deadlock."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from core.caller import Caller
from core.db import session_scope
from crm import record_lists, records
from tests.factories import make_tenant


def _waiting_on_a_lock(db: Engine) -> bool:
    with db.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                )
            ).scalar()
        )


def test_a_stage_change_waits_for_the_tenant_before_locking_the_deal(db: Engine) -> None:
    if db.dialect.name != "postgresql":
        pytest.skip("row locks: SQLite has one writer and no row locks")
    tenant = make_tenant(db)
    caller = Caller.operator(tenant)
    with session_scope(db) as session:
        deal_id = records.create_deal(session=session, caller=caller, title="Renewal", contact_ids=[]).id

    outcome: dict[str, object] = {}

    def move_the_deal() -> None:
        try:
            with session_scope(db) as session:
                record_lists.update_deal(session=session, caller=caller, deal_id=deal_id, stage="proposal")
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    with db.connect() as batch:  # a sync batch: the tenant's lock held, as crm.locks takes it
        batch.execute(text("SELECT id FROM tenant WHERE id = :t FOR NO KEY UPDATE"), {"t": tenant})
        mover = threading.Thread(target=move_the_deal)
        mover.start()
        deadline = time.monotonic() + 20
        while not _waiting_on_a_lock(db):
            assert time.monotonic() < deadline, "the stage change never waited for the tenant"
            assert mover.is_alive(), outcome
            time.sleep(0.05)
        # While the mover waits, the deal's row is free: a batch could lock it (linking mail to
        # the deal) and then commit, instead of the two waiting on each other.
        with db.connect() as other:
            try:
                other.execute(text("SELECT id FROM deal WHERE id = :d FOR UPDATE NOWAIT"), {"d": deal_id})
            except OperationalError as exc:  # pragma: no cover - the failure this test guards
                pytest.fail(f"the deal's row was locked before the tenant's: {exc}")
            other.rollback()
        batch.rollback()
    mover.join(30)
    assert not mover.is_alive() and "error" not in outcome, outcome.get("error")
    with session_scope(db) as session:
        assert records.get_deal(session=session, caller=caller, deal_id=deal_id).stage == "proposal"
