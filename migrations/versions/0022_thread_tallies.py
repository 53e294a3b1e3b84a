"""Sidebar counts from tallies kept by triggers

`thread.account_key` (",3,7,": the accounts holding mail of the conversation) is kept from
`thread_account` by triggers; `thread_tally` counts conversations per (tenant, account_key,
status, assignee, newest message ours), kept by triggers on `thread` for every writer (the sync's
store, a user's action, a merge). The sidebar sums a few hundred tally rows instead of reading
300,000 conversations; keying by the *set* of accounts keeps a conversation that reached two
accounts a member sees from being counted twice. Snoozes wake by time, not by a write: they are
tallied as stored and those whose time has come are read apart (ix_thread_tenant_snoozed).

Revision ID: 0022
Revises: 0021
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
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


# thread_deal: the pairs (thread T, deal in S) recomputed from the links of T's messages.
_DEALS_OF_MESSAGE = "SELECT record_id FROM message_link WHERE message_pk = {m} AND record_kind = 'deal'"


def _link_key(t: str, deal: str, sqlite: bool) -> str:
    """ ",3,7,": the accounts holding the messages of thread `t` linked to `deal`."""
    accounts = (
        "SELECT DISTINCT u.account_id AS a FROM message_link l2 JOIN message m2 ON m2.id = l2.message_pk "
        f"JOIN imap_uid u ON u.message_pk = m2.id WHERE m2.thread_id = {t} AND l2.record_kind = 'deal' "
        f"AND l2.record_id = {deal}"
    )
    if sqlite:
        return f"coalesce((SELECT ',' || group_concat(a, ',') || ',' FROM ({accounts} ORDER BY a)), '')"
    return f"coalesce((SELECT ',' || string_agg(a::text, ',' ORDER BY a) || ',' FROM ({accounts}) AS k), '')"


def _refresh_pairs(t: str, deals: str, sqlite: bool) -> str:
    return (
        f"DELETE FROM thread_deal WHERE thread_id = {t} AND deal_id IN ({deals}); "
        "INSERT INTO thread_deal (thread_id, deal_id, tenant_id, link_key) "
        f"SELECT {t}, l.record_id, min(l.tenant_id), {_link_key(t, 'l.record_id', sqlite)} "
        "FROM message_link l JOIN message m ON m.id = l.message_pk "
        f"WHERE m.thread_id = {t} AND l.record_kind = 'deal' AND l.record_id IN ({deals}) GROUP BY l.record_id "
        "ON CONFLICT (thread_id, deal_id) DO UPDATE SET link_key = excluded.link_key;"
    )


def _thread_deal_triggers(sqlite: bool) -> None:
    thread_of = "(SELECT thread_id FROM message WHERE id = {m})"
    if sqlite:
        for event, row in (("INSERT", "NEW"), ("DELETE", "OLD")):
            op.execute(
                f"CREATE TRIGGER thread_deal_on_link_{event.lower()} AFTER {event} ON message_link "
                f"WHEN {row}.record_kind = 'deal' BEGIN "
                f"{_refresh_pairs(thread_of.format(m=f'{row}.message_pk'), f'{row}.record_id', True)} END"
            )
            op.execute(
                f"CREATE TRIGGER thread_deal_on_location_{event.lower()} AFTER {event} ON imap_uid "
                f"WHEN {row}.message_pk IS NOT NULL BEGIN "
                f"{_refresh_pairs(thread_of.format(m=f'{row}.message_pk'), _DEALS_OF_MESSAGE.format(m=f'{row}.message_pk'), True)} END"
            )
        deals = _DEALS_OF_MESSAGE.format(m="NEW.id")
        op.execute(
            "CREATE TRIGGER thread_deal_on_move AFTER UPDATE OF thread_id ON message "
            "WHEN OLD.thread_id IS NOT NEW.thread_id BEGIN "
            f"{_refresh_pairs('OLD.thread_id', deals, True)} {_refresh_pairs('NEW.thread_id', deals, True)} END"
        )
        op.execute(
            "CREATE TRIGGER thread_deal_on_thread_delete AFTER DELETE ON thread BEGIN "
            "DELETE FROM thread_deal WHERE thread_id = OLD.id; END"
        )
        return
    op.execute(
        # The thread row is locked first, as for account_key: concurrent syncs see each other's rows.
        # The thread's messages are read first and the links reached by message: a plan the
        # planner cannot turn into a scan of every deal link (it did, before the tables had stats).
        "CREATE FUNCTION crm_thread_deal_refresh(t integer, deals integer[]) RETURNS void LANGUAGE plpgsql AS $$ "
        "DECLARE ids integer[]; BEGIN IF t IS NULL THEN RETURN; END IF; "
        "PERFORM 1 FROM thread WHERE id = t FOR UPDATE; "
        "ids := ARRAY(SELECT id FROM message WHERE thread_id = t); "
        "DELETE FROM thread_deal WHERE thread_id = t AND deal_id = ANY(deals); "
        "INSERT INTO thread_deal (thread_id, deal_id, tenant_id, link_key) "
        "SELECT t, l.record_id, min(l.tenant_id), coalesce((SELECT ',' || string_agg(a::text, ',' ORDER BY a) || ',' "
        "FROM (SELECT DISTINCT u.account_id AS a FROM message_link l2 JOIN imap_uid u ON u.message_pk = l2.message_pk "
        "WHERE l2.message_pk = ANY(ids) AND l2.record_kind = 'deal' AND l2.record_id = l.record_id) AS k), '') "
        "FROM message_link l WHERE l.message_pk = ANY(ids) AND l.record_kind = 'deal' AND l.record_id = ANY(deals) "
        "GROUP BY l.record_id ON CONFLICT (thread_id, deal_id) DO UPDATE SET link_key = excluded.link_key; END $$"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_deal_on_link() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE r message_link; "
        "BEGIN IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF; "
        "IF r.record_kind = 'deal' THEN PERFORM crm_thread_deal_refresh("
        "(SELECT thread_id FROM message WHERE id = r.message_pk), ARRAY[r.record_id]); END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_deal_on_location() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE pk integer; "
        "BEGIN IF TG_OP = 'DELETE' THEN pk := OLD.message_pk; ELSE pk := NEW.message_pk; END IF; "
        "IF pk IS NOT NULL AND EXISTS (SELECT 1 FROM message_link WHERE message_pk = pk AND record_kind = 'deal') THEN "
        "PERFORM crm_thread_deal_refresh((SELECT thread_id FROM message WHERE id = pk), "
        f"ARRAY({_DEALS_OF_MESSAGE.format(m='pk')})); END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_deal_on_move() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE deals integer[]; "
        f"BEGIN deals := ARRAY({_DEALS_OF_MESSAGE.format(m='NEW.id')}); "
        "IF OLD.thread_id IS DISTINCT FROM NEW.thread_id AND cardinality(deals) > 0 THEN "
        "IF OLD.thread_id IS NOT NULL THEN PERFORM crm_thread_deal_refresh(OLD.thread_id, deals); END IF; "
        "IF NEW.thread_id IS NOT NULL THEN PERFORM crm_thread_deal_refresh(NEW.thread_id, deals); END IF; "
        "END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_deal_on_link AFTER INSERT OR DELETE ON message_link "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_deal_on_link()"
    )
    op.execute(
        "CREATE TRIGGER thread_deal_on_location AFTER INSERT OR DELETE ON imap_uid "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_deal_on_location()"
    )
    op.execute(
        "CREATE TRIGGER thread_deal_on_move AFTER UPDATE OF thread_id ON message "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_deal_on_move()"
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
    op.create_table(
        "thread_deal",
        sa.Column(
            "thread_id", sa.Integer(), sa.ForeignKey("thread.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("deal_id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("link_key", sa.Text(), nullable=False),
    )
    op.create_index("ix_thread_deal_tenant", "thread_deal", ["tenant_id", "deal_id"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(
        "INSERT INTO thread_deal (thread_id, deal_id, tenant_id, link_key) "
        f"SELECT p.thread_id, p.deal_id, p.tenant_id, {_link_key('p.thread_id', 'p.deal_id', sqlite)} FROM "
        "(SELECT m.thread_id AS thread_id, l.record_id AS deal_id, min(l.tenant_id) AS tenant_id "
        "FROM message_link l JOIN message m ON m.id = l.message_pk "
        "WHERE l.record_kind = 'deal' AND m.thread_id IS NOT NULL GROUP BY m.thread_id, l.record_id) AS p"
    )
    _thread_deal_triggers(sqlite)
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
            "thread_deal_on_link_insert",
            "thread_deal_on_link_delete",
            "thread_deal_on_location_insert",
            "thread_deal_on_location_delete",
            "thread_deal_on_move",
            "thread_deal_on_thread_delete",
            "thread_account_key_on_insert",
            "thread_account_key_on_delete",
            "thread_tally_on_insert",
            "thread_tally_on_delete",
            "thread_tally_on_update",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        op.execute("DROP TRIGGER IF EXISTS thread_deal_on_link ON message_link")
        op.execute("DROP TRIGGER IF EXISTS thread_deal_on_location ON imap_uid")
        op.execute("DROP TRIGGER IF EXISTS thread_deal_on_move ON message")
        for function in ("on_link()", "on_location()", "on_move()", "refresh(integer, integer[])"):
            op.execute(f"DROP FUNCTION IF EXISTS crm_thread_deal_{function}")
        op.execute("DROP TRIGGER IF EXISTS thread_tally ON thread")
        op.execute("DROP TRIGGER IF EXISTS thread_account_key ON thread_account")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_tally()")
        op.execute("DROP FUNCTION IF EXISTS crm_tally_add(integer, text, text, integer, boolean, integer)")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_account_key()")
    op.drop_index("ix_thread_deal_tenant", table_name="thread_deal")
    op.drop_table("thread_deal")
    op.drop_index("ix_thread_tenant_snoozed", table_name="thread")
    op.drop_table("thread_tally")
    op.drop_column("thread", "account_key")
