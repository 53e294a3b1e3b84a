"""Unread and deal-stage counts from tallies; live events notified on PostgreSQL

The sidebar's last two counts that grew with the tenant (bench/RESULTS.md, issue 8):

- **Unread for me**: `thread_read_tally` holds, per user, changes to the number of conversations
  of each (accounts, status) they have read since their last mail. Triggers on `thread_read`
  (a mark set, moved or removed) and on `thread` (new mail makes a mark stale, a status or the
  accounts change) append +1/-1 rows; unread = open conversations seen minus the sum.
- **Per deal stage**: `thread_stage` is `thread_deal` grouped by the deals' stages (one row per
  conversation and stage, with the accounts of the linked mail and the conversation's status),
  kept by triggers on `thread_deal`, `deal` and `thread.status`; `thread_stage_tally` appends
  +1/-1 per change of those rows.

Why rows appended and summed rather than one counter row updated in place (as `thread_tally`
does): a counter row shared by writers that do not take the tenant's lock (a user marking a
conversation read, moving a deal) and by the sync (which does) is a lock taken in opposite
orders: the sync holds conversation B and the counter, a user holds conversation A and waits for
the counter, the sync then waits for A. Appended rows lock nothing but themselves. The reader
folds a user's (or a tenant's) rows into one per key when they pile up (`crm.inbox_counts`).

On PostgreSQL a read mark locks its conversation FOR SHARE before reading it: a sync making the
mark stale at the same moment then either sees the mark or is seen by it, and the tally stays
exact (READ COMMITTED, a fresh snapshot per statement of a trigger function).

Live events (PostgreSQL): new messages, activity (assignments, status, notes, mentions),
presence changes and changes to users (a deactivated user's streams end at once) send `NOTIFY crm_inbox_events, '<tenant id>'` from the writing transaction, so
event streams in every process wake when it commits (one notification per tenant and
transaction: PostgreSQL folds identical ones). Streams still read what happened from the tables.

Revision ID: 0026
Revises: 0025
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "crm_inbox_events"

# --- unread: a read mark is "fresh" while no mail came after it --------------------------------


def _read_delta(user: str, thread: str, read_at: str, delta: int) -> str:
    return (
        "INSERT INTO thread_read_tally (user_id, account_key, status, n) "
        f"SELECT {user}, t.account_key, t.status, {delta} FROM thread t "
        f"WHERE t.id = {thread} AND {read_at} >= t.last_date;"
    )


def _fresh(read_at: str, row: str) -> str:
    return f"coalesce({read_at} >= {row}.last_date, false)"


# A conversation changing: each fresh mark leaves its old (accounts, status) and joins the new
# one; a mark that stays fresh under the same key writes nothing.
_SAME_KEY = "OLD.account_key = NEW.account_key AND OLD.status = NEW.status"
_READS_LEAVING = (
    "INSERT INTO thread_read_tally (user_id, account_key, status, n) "
    "SELECT r.user_id, OLD.account_key, OLD.status, -1 FROM thread_read r WHERE r.thread_id = OLD.id "
    f"AND {_fresh('r.read_at', 'OLD')} AND NOT ({_fresh('r.read_at', 'NEW')} AND {_SAME_KEY});"
)
_READS_JOINING = (
    "INSERT INTO thread_read_tally (user_id, account_key, status, n) "
    "SELECT r.user_id, NEW.account_key, NEW.status, 1 FROM thread_read r WHERE r.thread_id = NEW.id "
    f"AND {_fresh('r.read_at', 'NEW')} AND NOT ({_fresh('r.read_at', 'OLD')} AND {_SAME_KEY});"
)
_READS_DELETED = (
    "INSERT INTO thread_read_tally (user_id, account_key, status, n) "
    "SELECT r.user_id, OLD.account_key, OLD.status, -1 FROM thread_read r WHERE r.thread_id = OLD.id "
    f"AND {_fresh('r.read_at', 'OLD')};"
)
_THREAD_CHANGED = (
    "OLD.account_key IS NOT NEW.account_key OR OLD.status IS NOT NEW.status "
    "OR OLD.last_date IS NOT NEW.last_date"
)

# --- deal stages -------------------------------------------------------------------------------


def _stage_key_sqlite(t: str, stage: str) -> str:
    """ ",3,7,": the accounts holding the messages of thread `t` linked to a deal in `stage`."""
    accounts = (
        "SELECT DISTINCT u.account_id AS a FROM message m2 JOIN message_link l2 ON l2.message_pk = m2.id "
        "JOIN deal d2 ON d2.id = l2.record_id JOIN imap_uid u ON u.message_pk = m2.id "
        f"WHERE m2.thread_id = {t} AND l2.record_kind = 'deal' AND d2.stage = {stage}"
    )
    return f"coalesce((SELECT ',' || group_concat(a, ',') || ',' FROM ({accounts} ORDER BY a)), '')"


# PostgreSQL: the union of the pairs' keys, from the thread's few `thread_deal` rows.
_STAGE_KEY_PG = (
    "coalesce((SELECT ',' || string_agg(a::text, ',' ORDER BY a) || ',' FROM (SELECT DISTINCT x::integer AS a "
    "FROM thread_deal td2 JOIN deal d2 ON d2.id = td2.deal_id, unnest(string_to_array(td2.link_key, ',')) AS x "
    "WHERE td2.thread_id = {t} AND d2.stage = {stage} AND x <> '') AS k), '')"
)


def _refresh_stages(threads: str, sqlite: bool) -> str:
    """Make `thread_stage` match `thread_deal` x `deal` for the threads `threads` (a subquery):
    rows of stages no longer linked go, the others are added or get their new key. A row that
    does not change is not written (its tally would churn)."""
    key = _stage_key_sqlite("t.id", "d.stage") if sqlite else _STAGE_KEY_PG.format(t="t.id", stage="d.stage")
    return (
        f"DELETE FROM thread_stage WHERE thread_id IN ({threads}) AND NOT EXISTS (SELECT 1 FROM thread_deal td "
        "JOIN deal d ON d.id = td.deal_id WHERE td.thread_id = thread_stage.thread_id AND d.stage = thread_stage.stage); "
        "INSERT INTO thread_stage (thread_id, stage, tenant_id, stage_key, status) "
        f"SELECT t.id, d.stage, t.tenant_id, {key}, t.status FROM thread t JOIN thread_deal td ON td.thread_id = t.id "
        f"JOIN deal d ON d.id = td.deal_id WHERE t.id IN ({threads}) GROUP BY t.id, d.stage, t.tenant_id, t.status "
        "ON CONFLICT (thread_id, stage) DO UPDATE SET stage_key = excluded.stage_key "
        "WHERE thread_stage.stage_key <> excluded.stage_key;"
    )


def _stage_delta(row: str, delta: int) -> str:
    return (
        "INSERT INTO thread_stage_tally (tenant_id, stage, stage_key, status, n) VALUES "
        f"({row}.tenant_id, {row}.stage, {row}.stage_key, {row}.status, {delta});"
    )


_STAGE_ROW_CHANGED = "OLD.stage_key IS NOT NEW.stage_key OR OLD.status IS NOT NEW.status"


def _sqlite_triggers() -> None:
    for event, row, delta in (("INSERT", "NEW", 1), ("DELETE", "OLD", -1)):
        op.execute(
            f"CREATE TRIGGER thread_read_tally_on_{event.lower()} AFTER {event} ON thread_read BEGIN "
            f"{_read_delta(f'{row}.user_id', f'{row}.thread_id', f'{row}.read_at', delta)} END"
        )
    op.execute(
        "CREATE TRIGGER thread_read_tally_on_update AFTER UPDATE ON thread_read BEGIN "
        f"{_read_delta('OLD.user_id', 'OLD.thread_id', 'OLD.read_at', -1)} "
        f"{_read_delta('NEW.user_id', 'NEW.thread_id', 'NEW.read_at', 1)} END"
    )
    op.execute(
        "CREATE TRIGGER thread_read_tally_on_thread AFTER UPDATE OF account_key, status, last_date ON thread "
        f"WHEN {_THREAD_CHANGED} BEGIN {_READS_LEAVING} {_READS_JOINING} END"
    )
    op.execute(
        f"CREATE TRIGGER thread_read_tally_on_thread_delete AFTER DELETE ON thread BEGIN {_READS_DELETED} END"
    )
    for event, row in (("INSERT", "NEW"), ("DELETE", "OLD")):
        op.execute(
            f"CREATE TRIGGER thread_stage_on_pair_{event.lower()} AFTER {event} ON thread_deal BEGIN "
            f"{_refresh_stages(f'SELECT {row}.thread_id', True)} END"
        )
    op.execute(
        "CREATE TRIGGER thread_stage_on_pair_update AFTER UPDATE ON thread_deal BEGIN "
        f"{_refresh_stages('SELECT OLD.thread_id UNION SELECT NEW.thread_id', True)} END"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_on_deal_stage AFTER UPDATE OF stage ON deal WHEN OLD.stage IS NOT NEW.stage "
        f"BEGIN {_refresh_stages('SELECT thread_id FROM thread_deal WHERE deal_id = NEW.id', True)} END"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_on_deal_delete AFTER DELETE ON deal "
        f"BEGIN {_refresh_stages('SELECT thread_id FROM thread_deal WHERE deal_id = OLD.id', True)} END"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_on_status AFTER UPDATE OF status ON thread WHEN OLD.status IS NOT NEW.status "
        "BEGIN UPDATE thread_stage SET status = NEW.status WHERE thread_id = NEW.id; END"
    )
    op.execute(
        f"CREATE TRIGGER thread_stage_tally_on_insert AFTER INSERT ON thread_stage BEGIN {_stage_delta('NEW', 1)} END"
    )
    op.execute(
        f"CREATE TRIGGER thread_stage_tally_on_delete AFTER DELETE ON thread_stage BEGIN {_stage_delta('OLD', -1)} END"
    )
    op.execute(
        f"CREATE TRIGGER thread_stage_tally_on_update AFTER UPDATE ON thread_stage WHEN {_STAGE_ROW_CHANGED} "
        f"BEGIN {_stage_delta('OLD', -1)} {_stage_delta('NEW', 1)} END"
    )


def _pg_triggers() -> None:
    op.execute(
        "CREATE FUNCTION crm_read_tally_on_read() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP <> 'INSERT' THEN PERFORM 1 FROM thread WHERE id = OLD.thread_id FOR SHARE; "
        f"{_read_delta('OLD.user_id', 'OLD.thread_id', 'OLD.read_at', -1)} END IF; "
        "IF TG_OP <> 'DELETE' THEN PERFORM 1 FROM thread WHERE id = NEW.thread_id FOR SHARE; "
        f"{_read_delta('NEW.user_id', 'NEW.thread_id', 'NEW.read_at', 1)} END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_read_tally AFTER INSERT OR UPDATE OR DELETE ON thread_read "
        "FOR EACH ROW EXECUTE FUNCTION crm_read_tally_on_read()"
    )
    changed = _THREAD_CHANGED.replace("IS NOT", "IS DISTINCT FROM")
    op.execute(
        "CREATE FUNCTION crm_thread_counts_on_thread() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP = 'DELETE' THEN {_READS_DELETED} RETURN NULL; END IF; "
        f"IF {changed} THEN {_READS_LEAVING} {_READS_JOINING} END IF; "
        "IF OLD.status IS DISTINCT FROM NEW.status THEN "
        "UPDATE thread_stage SET status = NEW.status WHERE thread_id = NEW.id; END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_counts AFTER UPDATE OF account_key, status, last_date OR DELETE ON thread "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_counts_on_thread()"
    )
    # The pairs of one thread change with the thread row locked (crm_thread_deal_refresh). A
    # deal's stage change (a user's edit) first takes the tenant's lock, as the sync and the
    # backfill do (crm.locks): a batch linking mail to that deal meanwhile has committed, and its
    # pairs are seen here, or waits and reads the new stage; then it locks the deal's
    # conversations in id order, so a status change under way is seen too.
    op.execute(
        "CREATE FUNCTION crm_thread_stage_on_pair() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP <> 'INSERT' THEN "
        f"{_refresh_stages('SELECT OLD.thread_id', False)} END IF; "
        "IF TG_OP <> 'DELETE' THEN "
        f"{_refresh_stages('SELECT NEW.thread_id', False)} END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_on_pair AFTER INSERT OR UPDATE OR DELETE ON thread_deal "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_stage_on_pair()"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_stage_on_deal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF TG_OP = 'UPDATE' AND OLD.stage IS NOT DISTINCT FROM NEW.stage THEN RETURN NULL; END IF; "
        "PERFORM 1 FROM tenant WHERE id = OLD.tenant_id FOR NO KEY UPDATE; "
        "PERFORM 1 FROM thread WHERE id IN (SELECT thread_id FROM thread_deal WHERE deal_id = OLD.id) "
        "ORDER BY id FOR UPDATE; "
        f"{_refresh_stages('SELECT thread_id FROM thread_deal WHERE deal_id = OLD.id', False)} "
        "RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_on_deal AFTER UPDATE OF stage OR DELETE ON deal "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_stage_on_deal()"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_stage_tally() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF TG_OP = 'INSERT' THEN {_stage_delta('NEW', 1)} RETURN NULL; END IF; "
        f"IF TG_OP = 'DELETE' THEN {_stage_delta('OLD', -1)} RETURN NULL; END IF; "
        f"IF {_STAGE_ROW_CHANGED.replace('IS NOT', 'IS DISTINCT FROM')} THEN "
        f"{_stage_delta('OLD', -1)} {_stage_delta('NEW', 1)} END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_stage_tally AFTER INSERT OR UPDATE OR DELETE ON thread_stage "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_stage_tally()"
    )
    # Live events: statement-level, so a batch of 200 messages sends one notification.
    op.execute(
        "CREATE FUNCTION crm_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$ DECLARE tenant integer; BEGIN "
        "FOR tenant IN SELECT DISTINCT tenant_id FROM changed LOOP "
        f"PERFORM pg_notify('{CHANNEL}', tenant::text); END LOOP; RETURN NULL; END $$"
    )
    # app_user: a user deactivated must see their streams end at once (they re-check on waking).
    for table in ("message", "activity", "presence", "app_user"):
        events = {"presence": ("INSERT", "UPDATE"), "app_user": ("UPDATE",)}.get(table, ("INSERT",))
        for event in events:
            op.execute(
                f"CREATE TRIGGER {table}_notify_{event.lower()} AFTER {event} ON {table} "
                "REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION crm_notify_events()"
            )


def upgrade() -> None:
    status = sa.String(length=32)
    op.create_table(
        "thread_read_tally",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("account_key", sa.Text(), nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_thread_read_tally_user", "thread_read_tally", ["user_id"])
    op.create_table(
        "thread_stage",
        sa.Column(
            "thread_id", sa.Integer(), sa.ForeignKey("thread.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("stage", sa.String(length=100), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("stage_key", sa.Text(), nullable=False),
        sa.Column("status", status, nullable=False),
    )
    op.create_index("ix_thread_stage_tenant", "thread_stage", ["tenant_id", "stage"])
    op.create_table(
        "thread_stage_tally",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("stage", sa.String(length=100), nullable=False),
        sa.Column("stage_key", sa.Text(), nullable=False),
        sa.Column("status", status, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_index("ix_thread_stage_tally_tenant", "thread_stage_tally", ["tenant_id", "stage"])
    op.create_index("ix_deal_tenant_stage", "deal", ["tenant_id", "stage"])
    sqlite = op.get_bind().dialect.name == "sqlite"
    # What exists already, tallied once; the triggers keep it from here.
    op.execute(
        "INSERT INTO thread_read_tally (user_id, account_key, status, n) "
        "SELECT r.user_id, t.account_key, t.status, count(*) FROM thread_read r JOIN thread t ON t.id = r.thread_id "
        "WHERE r.read_at >= t.last_date GROUP BY r.user_id, t.account_key, t.status"
    )
    key = _stage_key_sqlite("t.id", "d.stage") if sqlite else _STAGE_KEY_PG.format(t="t.id", stage="d.stage")
    op.execute(
        "INSERT INTO thread_stage (thread_id, stage, tenant_id, stage_key, status) "
        f"SELECT t.id, d.stage, t.tenant_id, {key}, t.status FROM thread t JOIN thread_deal td ON td.thread_id = t.id "
        "JOIN deal d ON d.id = td.deal_id GROUP BY t.id, d.stage, t.tenant_id, t.status"
    )
    op.execute(
        "INSERT INTO thread_stage_tally (tenant_id, stage, stage_key, status, n) "
        "SELECT tenant_id, stage, stage_key, status, count(*) FROM thread_stage "
        "GROUP BY tenant_id, stage, stage_key, status"
    )
    if sqlite:
        _sqlite_triggers()
    else:
        _pg_triggers()


_SQLITE_TRIGGERS = (
    "thread_read_tally_on_insert",
    "thread_read_tally_on_delete",
    "thread_read_tally_on_update",
    "thread_read_tally_on_thread",
    "thread_read_tally_on_thread_delete",
    "thread_stage_on_pair_insert",
    "thread_stage_on_pair_delete",
    "thread_stage_on_pair_update",
    "thread_stage_on_deal_stage",
    "thread_stage_on_deal_delete",
    "thread_stage_on_status",
    "thread_stage_tally_on_insert",
    "thread_stage_tally_on_delete",
    "thread_stage_tally_on_update",
)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        for trigger, table in (
            ("thread_read_tally", "thread_read"),
            ("thread_counts", "thread"),
            ("thread_stage_on_pair", "thread_deal"),
            ("thread_stage_on_deal", "deal"),
            ("thread_stage_tally", "thread_stage"),
            ("message_notify_insert", "message"),
            ("activity_notify_insert", "activity"),
            ("presence_notify_insert", "presence"),
            ("presence_notify_update", "presence"),
            ("app_user_notify_update", "app_user"),
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for function in (
            "crm_read_tally_on_read",
            "crm_thread_counts_on_thread",
            "crm_thread_stage_on_pair",
            "crm_thread_stage_on_deal",
            "crm_thread_stage_tally",
            "crm_notify_events",
        ):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_index("ix_deal_tenant_stage", table_name="deal")
    op.drop_index("ix_thread_stage_tally_tenant", table_name="thread_stage_tally")
    op.drop_table("thread_stage_tally")
    op.drop_index("ix_thread_stage_tenant", table_name="thread_stage")
    op.drop_table("thread_stage")
    op.drop_index("ix_thread_read_tally_user", table_name="thread_read_tally")
    op.drop_table("thread_read_tally")
