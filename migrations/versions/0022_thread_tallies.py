"""Sidebar counts from tallies kept by triggers

`thread.account_key` (",3,7,": the accounts holding mail of the conversation) is kept from
`thread_account` by triggers; `thread_tally` counts conversations per (tenant, account_key,
status, assignee, newest message ours), kept by triggers on `thread` for every writer (the sync's
store, a user's action, a merge). The sidebar sums a few hundred tally rows instead of reading
300,000 conversations; keying by the *set* of accounts keeps a conversation that reached two
accounts a member sees from being counted twice. Snoozes wake by time, not by a write: they are
tallied as stored and those whose time has come are read apart (ix_thread_tenant_snoozed).

Revision ID: 0022
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TALLY_KEY = "tenant_id, account_key, status, assignee_user_id, ours_last"

_SQLITE_KEY_OF = (
    "coalesce((SELECT ',' || group_concat(account_id, ',') || ',' FROM "
    "(SELECT account_id FROM thread_account WHERE thread_id = {t} ORDER BY account_id)), '')"
)
_PG_KEY_OF = (
    "coalesce((SELECT ',' || string_agg(account_id::text, ',' ORDER BY account_id) || ',' "
    "FROM thread_account WHERE thread_id = {t}), '')"
)


def _sqlite_add(row: str, delta: int) -> str:
    return (
        f"INSERT INTO thread_tally ({_TALLY_KEY}, n) VALUES ({row}.tenant_id, {row}.account_key, "
        f"{row}.status, coalesce({row}.assignee_user_id, 0), {row}.last_direction = 'outbound', {delta}) "
        f"ON CONFLICT ({_TALLY_KEY}) DO UPDATE SET n = n + excluded.n;"
    )


def upgrade() -> None:
    op.add_column("thread", sa.Column("account_key", sa.Text(), nullable=False, server_default=""))
    op.create_table(
        "thread_tally",
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), primary_key=True),
        sa.Column("account_key", sa.Text(), primary_key=True),
        sa.Column("status", sa.String(length=32), primary_key=True),
        sa.Column("assignee_user_id", sa.Integer(), primary_key=True),
        sa.Column("ours_last", sa.Boolean(), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_thread_tenant_snoozed", "thread", ["tenant_id", "status", "snoozed_until"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(
        f"UPDATE thread SET account_key = {(_SQLITE_KEY_OF if sqlite else _PG_KEY_OF).format(t='thread.id')}"
    )
    op.execute(
        f"INSERT INTO thread_tally ({_TALLY_KEY}, n) SELECT tenant_id, account_key, status, "
        "coalesce(assignee_user_id, 0), last_direction = 'outbound', count(*) FROM thread "
        "GROUP BY tenant_id, account_key, status, coalesce(assignee_user_id, 0), last_direction = 'outbound'"
    )
    if sqlite:
        key_of = _SQLITE_KEY_OF
        for event, row in (("INSERT", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER thread_account_key_on_{event.lower()} AFTER {event} ON thread_account BEGIN "
                f"UPDATE thread SET account_key = {key_of.format(t=f'{row}.thread_id')} "
                f"WHERE id = {row}.thread_id; END"
            )
        op.execute(
            f"CREATE TRIGGER thread_tally_on_insert AFTER INSERT ON thread BEGIN {_sqlite_add('NEW', 1)} END"
        )
        op.execute(
            f"CREATE TRIGGER thread_tally_on_delete AFTER DELETE ON thread BEGIN {_sqlite_add('OLD', -1)} END"
        )
        op.execute(
            "CREATE TRIGGER thread_tally_on_update AFTER UPDATE OF account_key, status, assignee_user_id, "
            "last_direction ON thread WHEN OLD.account_key IS NOT NEW.account_key OR OLD.status IS NOT NEW.status "
            "OR OLD.assignee_user_id IS NOT NEW.assignee_user_id OR OLD.last_direction IS NOT NEW.last_direction "
            f"BEGIN {_sqlite_add('OLD', -1)} {_sqlite_add('NEW', 1)} END"
        )
        return
    # The thread row is locked before its accounts are read: two syncs adding accounts to one
    # conversation at once then each see the other's pair (READ COMMITTED, a fresh snapshot per
    # statement of a volatile function), and the key stays exact.
    op.execute(
        "CREATE FUNCTION crm_thread_account_key() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE t integer; BEGIN "
        "IF TG_OP = 'DELETE' THEN t := OLD.thread_id; ELSE t := NEW.thread_id; END IF; "
        "PERFORM 1 FROM thread WHERE id = t FOR UPDATE; "
        f"UPDATE thread SET account_key = {_PG_KEY_OF.format(t='t')} WHERE id = t; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_account_key AFTER INSERT OR DELETE ON thread_account "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_account_key()"
    )
    op.execute(
        "CREATE FUNCTION crm_tally_add(p_tenant integer, p_key text, p_status text, p_assignee integer, "
        "p_ours boolean, p_delta integer) RETURNS void LANGUAGE sql AS $$ "
        f"INSERT INTO thread_tally AS t ({_TALLY_KEY}, n) VALUES (p_tenant, p_key, p_status, "
        f"coalesce(p_assignee, 0), p_ours, p_delta) ON CONFLICT ({_TALLY_KEY}) DO UPDATE SET n = t.n + excluded.n $$"
    )
    # Two rows change when a conversation moves: always in key order, so two transactions moving
    # conversations between the same two tallies wait for each other instead of deadlocking.
    old = "OLD.tenant_id, OLD.account_key, OLD.status, OLD.assignee_user_id, OLD.last_direction = 'outbound'"
    new = "NEW.tenant_id, NEW.account_key, NEW.status, NEW.assignee_user_id, NEW.last_direction = 'outbound'"
    op.execute(
        "CREATE FUNCTION crm_thread_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'INSERT' THEN "
        f"PERFORM crm_tally_add({new}, 1); RETURN NULL; END IF; "
        "IF TG_OP = 'DELETE' THEN "
        f"PERFORM crm_tally_add({old}, -1); RETURN NULL; END IF; "
        "IF OLD.account_key = NEW.account_key AND OLD.status = NEW.status AND OLD.tenant_id = NEW.tenant_id "
        "AND OLD.assignee_user_id IS NOT DISTINCT FROM NEW.assignee_user_id "
        "AND OLD.last_direction = NEW.last_direction THEN RETURN NULL; END IF; "
        "IF (OLD.account_key, OLD.status, coalesce(OLD.assignee_user_id, 0), OLD.last_direction) < "
        "(NEW.account_key, NEW.status, coalesce(NEW.assignee_user_id, 0), NEW.last_direction) THEN "
        f"PERFORM crm_tally_add({old}, -1); PERFORM crm_tally_add({new}, 1); "
        f"ELSE PERFORM crm_tally_add({new}, 1); PERFORM crm_tally_add({old}, -1); END IF; "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_tally AFTER INSERT OR DELETE OR UPDATE OF account_key, status, assignee_user_id, "
        "last_direction, tenant_id ON thread FOR EACH ROW EXECUTE FUNCTION crm_thread_tally()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in (
            "thread_account_key_on_insert",
            "thread_account_key_on_delete",
            "thread_tally_on_insert",
            "thread_tally_on_delete",
            "thread_tally_on_update",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        op.execute("DROP TRIGGER IF EXISTS thread_tally ON thread")
        op.execute("DROP TRIGGER IF EXISTS thread_account_key ON thread_account")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_tally()")
        op.execute("DROP FUNCTION IF EXISTS crm_tally_add(integer, text, text, integer, boolean, integer)")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_account_key()")
    op.drop_index("ix_thread_tenant_snoozed", table_name="thread")
    op.drop_table("thread_tally")
    op.drop_column("thread", "account_key")
