"""Conversations: status, snooze and assignee on threads; read marks, notes, activity

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", sa.String(length=32), nullable=False, server_default="open"))
        batch_op.add_column(sa.Column("snoozed_until", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("assignee_user_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key("fk_thread_assignee_user_id", "app_user", ["assignee_user_id"], ["id"])
        batch_op.create_index("ix_thread_assignee_user_id", ["assignee_user_id"], unique=False)
    op.create_table(
        "thread_read",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("thread_id", sa.Integer(), sa.ForeignKey("thread.id"), nullable=False),
        sa.Column("read_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("user_id", "thread_id"),
    )
    op.create_index("ix_thread_read_thread_id", "thread_read", ["thread_id"])
    op.create_table(
        "note",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("thread_id", sa.Integer(), sa.ForeignKey("thread.id"), nullable=False),
        sa.Column("author_user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mentions", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_note_thread_id", "note", ["thread_id"])
    op.create_table(
        "activity",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("thread_id", sa.Integer(), sa.ForeignKey("thread.id"), nullable=True),
        sa.Column("actor_user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_activity_thread", "activity", ["thread_id", "id"])
    op.create_index("ix_activity_tenant", "activity", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_activity_tenant", table_name="activity")
    op.drop_index("ix_activity_thread", table_name="activity")
    op.drop_table("activity")
    op.drop_index("ix_note_thread_id", table_name="note")
    op.drop_table("note")
    op.drop_index("ix_thread_read_thread_id", table_name="thread_read")
    op.drop_table("thread_read")
    with op.batch_alter_table("thread", schema=None) as batch_op:
        batch_op.drop_index("ix_thread_assignee_user_id")
        batch_op.drop_constraint("fk_thread_assignee_user_id", type_="foreignkey")
        batch_op.drop_column("assignee_user_id")
        batch_op.drop_column("snoozed_until")
        batch_op.drop_column("status")
