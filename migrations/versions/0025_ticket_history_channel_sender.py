"""Ticket history; a forwarding channel's reply sender verified by an emailed link

Revision ID: 0025
Revises: 0024
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ticket_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=False),
        sa.Column("change", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.String(length=64), nullable=True),
        sa.Column("new_value", sa.String(length=64), nullable=True),
        sa.Column("actor_user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_ticket_event_ticket_id", "ticket_event", ["ticket_id"])
    with op.batch_alter_table("forwarding_channel") as batch:
        batch.add_column(sa.Column("sender_email", sa.String(length=320), nullable=True))
    with op.batch_alter_table("sender_verification") as batch:
        batch.add_column(sa.Column("account_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_sender_verification_account_id", "mail_account", ["account_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("sender_verification") as batch:
        batch.drop_constraint("fk_sender_verification_account_id", type_="foreignkey")
        batch.drop_column("account_id")
    with op.batch_alter_table("forwarding_channel") as batch:
        batch.drop_column("sender_email")
    op.drop_index("ix_ticket_event_ticket_id", table_name="ticket_event")
    op.drop_table("ticket_event")
