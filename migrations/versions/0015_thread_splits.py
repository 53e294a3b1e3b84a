"""Conversations split apart by a user stay apart

Revision ID: 0015
Revises: 0013 (0014 when the robustness migration lands)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0015"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "thread_split",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("thread_a", sa.Integer(), sa.ForeignKey("thread.id"), nullable=False),
        sa.Column("thread_b", sa.Integer(), sa.ForeignKey("thread.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("thread_a", "thread_b"),
    )
    op.create_index("ix_thread_split_tenant_id", "thread_split", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_thread_split_tenant_id", table_name="thread_split")
    op.drop_table("thread_split")
