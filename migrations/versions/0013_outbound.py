"""Outbound mail: the send queue, per-account sending choices, Message-ID keys

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbound_mail",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("thread_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("from_email", sa.String(length=320), nullable=False),
        sa.Column("from_name", sa.Text(), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("to_addrs", sa.JSON(), nullable=False),
        sa.Column("cc_addrs", sa.JSON(), nullable=False),
        sa.Column("bcc_addrs", sa.JSON(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("last_response_code", sa.Integer(), nullable=True),
        sa.Column("last_response", sa.Text(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_params", sa.JSON(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("sent_at", UTCDateTime(), nullable=True),
        sa.Column("stored_message_pk", sa.Integer(), nullable=True),
        sa.Column("sent_folder_done", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.ForeignKeyConstraint(["account_id"], ["mail_account.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"]),
        sa.ForeignKeyConstraint(["thread_id"], ["thread.id"]),
        sa.ForeignKeyConstraint(["stored_message_pk"], ["message.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "message_id"),
    )
    op.create_index("ix_outbound_mail_account_id", "outbound_mail", ["account_id"])
    op.create_index("ix_outbound_due", "outbound_mail", ["state", "next_attempt_at"])
    op.create_index("ix_outbound_tenant_created", "outbound_mail", ["tenant_id", "created_at"])
    op.create_table(
        "outbound_account",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("sender_name", sa.String(length=32), nullable=False),
        sa.Column("server_saves_sent", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["mail_account.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.create_table(
        "message_id_key",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )


def downgrade() -> None:
    op.drop_table("message_id_key")
    op.drop_table("outbound_account")
    op.drop_index("ix_outbound_tenant_created", table_name="outbound_mail")
    op.drop_index("ix_outbound_due", table_name="outbound_mail")
    op.drop_index("ix_outbound_mail_account_id", table_name="outbound_mail")
    op.drop_table("outbound_mail")
