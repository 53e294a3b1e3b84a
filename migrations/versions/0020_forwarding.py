"""Hosted forwarding addresses: channels, inbound deliveries, tickets; the account kind

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "forwarding_channel",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("local_part", sa.String(length=64), nullable=False),
        sa.Column("suffix", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("activated_at", UTCDateTime(), nullable=True),
        sa.Column("original_address", sa.String(length=320), nullable=False),
        sa.Column("create_tickets", sa.Boolean(), nullable=False),
        sa.Column("ticket_stage", sa.String(length=32), nullable=False),
        sa.Column("ticket_priority", sa.String(length=32), nullable=False),
        sa.Column("loop_message_id", sa.Text(), nullable=True),
        sa.Column("loop_detected_at", UTCDateTime(), nullable=True),
        sa.Column("test_token", sa.String(length=64), nullable=True),
        sa.Column("test_sent_at", UTCDateTime(), nullable=True),
        sa.Column("test_received_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_account.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id"),
        sa.UniqueConstraint("address"),
    )
    with op.batch_alter_table("forwarding_channel", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_forwarding_channel_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "ticket",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.String(length=32), nullable=False),
        sa.Column("owner_user_id", sa.Integer(), nullable=True),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_account.id"],
        ),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["app_user.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"],
            ["thread.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "number"),
        sa.UniqueConstraint("thread_id"),
    )
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.create_index("ix_ticket_opened", ["tenant_id", "opened_at"], unique=False)

    op.create_table(
        "inbound_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("credited_from", sa.String(length=320), nullable=False),
        sa.Column("forwarded_by", sa.String(length=320), nullable=True),
        sa.Column("unattributed", sa.Boolean(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("arrivals", sa.Integer(), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("last_arrival_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["mail_account.id"],
        ),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["message.id"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "dedupe_key"),
    )
    with op.batch_alter_table("inbound_delivery", schema=None) as batch_op:
        batch_op.create_index("ix_inbound_delivery_message", ["account_id", "message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbound_delivery_tenant_id"), ["tenant_id"], unique=False)

    with op.batch_alter_table("mail_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=32), server_default="imap", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("mail_account", schema=None) as batch_op:
        batch_op.drop_column("kind")
    op.drop_index("ix_inbound_delivery_tenant_id", table_name="inbound_delivery")
    op.drop_index("ix_inbound_delivery_message", table_name="inbound_delivery")
    op.drop_table("inbound_delivery")
    op.drop_index("ix_ticket_opened", table_name="ticket")
    op.drop_table("ticket")
    op.drop_index("ix_forwarding_channel_tenant_id", table_name="forwarding_channel")
    op.drop_table("forwarding_channel")
