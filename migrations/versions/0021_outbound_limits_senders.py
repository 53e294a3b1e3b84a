"""Outbound mail, continued: daily limits, system mail, sending modes, sender verification, drafts,
notification templates and preferences

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbound_account") as batch:
        batch.add_column(sa.Column("daily_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("daily_limit_unit", sa.String(length=32), nullable=True))
    # System mail (notifications, verification links) may leave through the deployment's SMTP.
    with op.batch_alter_table("outbound_mail") as batch:
        batch.alter_column("account_id", existing_type=sa.Integer(), nullable=True)
    op.create_table(
        "tenant_mail_settings",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=32), nullable=False),
        sa.Column("own_account_id", sa.Integer(), nullable=True),
        sa.Column("from_email", sa.String(length=320), nullable=True),
        sa.Column("notifications_enabled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.ForeignKeyConstraint(["own_account_id"], ["mail_account.id"]),
        sa.PrimaryKeyConstraint("tenant_id"),
    )
    op.create_table(
        "sender_verification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("sends", sa.Integer(), nullable=False),
        sa.Column("last_sent_at", UTCDateTime(), nullable=True),
        sa.Column("verified_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sender_verification_tenant_id", "sender_verification", ["tenant_id"])
    op.create_table(
        "outbound_draft",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("shared", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("to_addrs", sa.JSON(), nullable=False),
        sa.Column("cc_addrs", sa.JSON(), nullable=False),
        sa.Column("bcc_addrs", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"]),
        sa.ForeignKeyConstraint(["thread_id"], ["thread.id"]),
        sa.ForeignKeyConstraint(["account_id"], ["mail_account.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user_id", "thread_id"),
    )
    op.create_index("ix_outbound_draft_tenant_id", "outbound_draft", ["tenant_id"])
    op.create_table(
        "notification_template",
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("tenant_id", "event"),
    )
    op.create_table(
        "notification_pref",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("digest_hour", sa.Integer(), nullable=True),
        sa.Column("digest_sent_at", UTCDateTime(), nullable=True),
        sa.Column("watched_account_ids", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["app_user.id"]),
        sa.PrimaryKeyConstraint("user_id", "event"),
    )


def downgrade() -> None:
    op.drop_table("notification_pref")
    op.drop_table("notification_template")
    op.drop_index("ix_outbound_draft_tenant_id", table_name="outbound_draft")
    op.drop_table("outbound_draft")
    op.drop_index("ix_sender_verification_tenant_id", table_name="sender_verification")
    op.drop_table("sender_verification")
    op.drop_table("tenant_mail_settings")
    with op.batch_alter_table("outbound_mail") as batch:
        batch.alter_column("account_id", existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table("outbound_account") as batch:
        batch.drop_column("daily_limit_unit")
        batch.drop_column("daily_limit")
