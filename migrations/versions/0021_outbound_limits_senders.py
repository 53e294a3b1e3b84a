"""Outbound mail, continued: daily sending limits per account

Revision ID: 0021
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbound_account") as batch:
        batch.add_column(sa.Column("daily_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_limit_unit", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound_account") as batch:
        batch.drop_column("daily_limit_unit")
        batch.drop_column("daily_limit")
