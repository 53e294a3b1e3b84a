"""Conversation lists at size: last_direction on threads, last_date never NULL, list indexes

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_direction", sa.String(length=32), nullable=False, server_default="inbound")
        )
    op.execute(
        "UPDATE thread SET last_direction = coalesce((SELECT m.direction FROM message m WHERE m.thread_id = thread.id "
        "ORDER BY m.date DESC, m.id DESC LIMIT 1), 'inbound')"
    )
    op.execute("UPDATE thread SET last_date = '1970-01-01 00:00:00' WHERE last_date IS NULL")
    op.create_index("ix_thread_tenant_last", "thread", ["tenant_id", "last_date", "id"])
    op.create_index("ix_thread_tenant_status", "thread", ["tenant_id", "status", "assignee_user_id"])


def downgrade() -> None:
    op.drop_index("ix_thread_tenant_status", table_name="thread")
    op.drop_index("ix_thread_tenant_last", table_name="thread")
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_column("last_direction")
