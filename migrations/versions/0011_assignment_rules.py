"""Assignment rules per account (none, round-robin with a cap, contact owner) and follow-up days

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "assignment_rule",
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("mail_account.id"), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("user_ids", sa.JSON(), nullable=False),
        sa.Column("max_open", sa.Integer(), nullable=True),
        sa.Column("last_user_id", sa.Integer(), nullable=True),
        sa.Column("follow_up_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_assignment_rule_tenant_id", "assignment_rule", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_assignment_rule_tenant_id", table_name="assignment_rule")
    op.drop_table("assignment_rule")
