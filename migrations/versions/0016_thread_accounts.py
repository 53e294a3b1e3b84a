"""thread_account: the accounts holding mail of each conversation, kept by triggers

Visibility of a conversation (a member sees it when one of its messages is in an account granted
to them) and the per-account views read this table instead of joining every message's locations.
Triggers keep it: a new location of a message (imap_uid), and a message moving to a thread
(threading, a user's merge or split) add the pair; deleting a thread deletes its pairs (cascade).
A pair left behind when a user splits a message out is removed by the split itself.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
INSERT INTO thread_account (thread_id, account_id)
SELECT DISTINCT m.thread_id, u.account_id FROM imap_uid u JOIN message m ON m.id = u.message_pk
WHERE m.thread_id IS NOT NULL
"""


def upgrade() -> None:
    op.create_table(
        "thread_account",
        sa.Column(
            "thread_id", sa.Integer(), sa.ForeignKey("thread.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("mail_account.id"), primary_key=True),
    )
    op.create_index("ix_thread_account_account", "thread_account", ["account_id", "thread_id"])
    op.execute(_BACKFILL)
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER thread_account_on_location AFTER INSERT ON imap_uid WHEN NEW.message_pk IS NOT NULL BEGIN "
            "INSERT OR IGNORE INTO thread_account (thread_id, account_id) "
            "SELECT m.thread_id, NEW.account_id FROM message m WHERE m.id = NEW.message_pk AND m.thread_id IS NOT NULL; END"
        )
        op.execute(
            "CREATE TRIGGER thread_account_on_thread AFTER UPDATE OF thread_id ON message WHEN NEW.thread_id IS NOT NULL BEGIN "
            "INSERT OR IGNORE INTO thread_account (thread_id, account_id) "
            "SELECT NEW.thread_id, u.account_id FROM imap_uid u WHERE u.message_pk = NEW.id; END"
        )
        op.execute(
            "CREATE TRIGGER thread_account_on_message AFTER INSERT ON message WHEN NEW.thread_id IS NOT NULL BEGIN "
            "INSERT OR IGNORE INTO thread_account (thread_id, account_id) "
            "SELECT NEW.thread_id, u.account_id FROM imap_uid u WHERE u.message_pk = NEW.id; END"
        )
        # SQLite enforces the cascade only with foreign keys on (they are, core.db); be explicit.
        op.execute(
            "CREATE TRIGGER thread_account_on_thread_delete AFTER DELETE ON thread BEGIN "
            "DELETE FROM thread_account WHERE thread_id = OLD.id; END"
        )
        return
    op.execute(
        "CREATE FUNCTION crm_thread_account_on_location() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.message_pk IS NOT NULL THEN "
        "INSERT INTO thread_account (thread_id, account_id) SELECT m.thread_id, NEW.account_id FROM message m "
        "WHERE m.id = NEW.message_pk AND m.thread_id IS NOT NULL ON CONFLICT DO NOTHING; END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE FUNCTION crm_thread_account_on_thread() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.thread_id IS NOT NULL THEN "
        "INSERT INTO thread_account (thread_id, account_id) SELECT NEW.thread_id, u.account_id FROM imap_uid u "
        "WHERE u.message_pk = NEW.id ON CONFLICT DO NOTHING; END IF; RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER thread_account_on_location AFTER INSERT ON imap_uid "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_account_on_location()"
    )
    op.execute(
        "CREATE TRIGGER thread_account_on_thread AFTER INSERT OR UPDATE OF thread_id ON message "
        "FOR EACH ROW EXECUTE FUNCTION crm_thread_account_on_thread()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for trigger in (
            "thread_account_on_location",
            "thread_account_on_thread",
            "thread_account_on_message",
            "thread_account_on_thread_delete",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    else:
        op.execute("DROP TRIGGER IF EXISTS thread_account_on_location ON imap_uid")
        op.execute("DROP TRIGGER IF EXISTS thread_account_on_thread ON message")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_account_on_location()")
        op.execute("DROP FUNCTION IF EXISTS crm_thread_account_on_thread()")
    op.drop_index("ix_thread_account_account", table_name="thread_account")
    op.drop_table("thread_account")
