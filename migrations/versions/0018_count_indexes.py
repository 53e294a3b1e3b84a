"""Covering indexes for the sidebar's counts

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_thread_tenant_state", "thread", ["tenant_id", "status", "assignee_user_id", "snoozed_until"]
    )
    op.create_index(
        "ix_thread_tenant_waiting", "thread", ["tenant_id", "last_direction", "last_date", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_thread_tenant_waiting", table_name="thread")
    op.drop_index("ix_thread_tenant_state", table_name="thread")
