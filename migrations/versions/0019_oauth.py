"""oauth_grant and oauth_consent: mailboxes connected by OAuth2 consent (Google, Microsoft 365)

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.types import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "oauth_grant",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("mail_account.id"), nullable=False, unique=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_token_encrypted", sa.Text(), nullable=True),
        sa.Column("access_expires_at", UTCDateTime(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("refreshing_owner", sa.String(200), nullable=True),
        sa.Column("refreshing_until", UTCDateTime(), nullable=True),
        sa.Column("refreshed_at", UTCDateTime(), nullable=True),
        sa.Column("refresh_failures", sa.Integer(), nullable=False),
        sa.Column("next_refresh_at", UTCDateTime(), nullable=True),
        sa.Column("usable", sa.Boolean(), nullable=False),
        sa.Column("connected_by_user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=True),
        sa.Column("connected_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_oauth_grant_tenant_id", "oauth_grant", ["tenant_id"])
    op.create_table(
        "oauth_consent",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("state_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("binding_hash", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.Integer(), sa.ForeignKey("tenant.id"), nullable=False),
        sa.Column("user_id", sa.Integer(), sa.ForeignKey("app_user.id"), nullable=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("verifier_encrypted", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.String(1000), nullable=False),
        sa.Column("account_id", sa.Integer(), sa.ForeignKey("mail_account.id"), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=True),
    )
    op.create_index("ix_oauth_consent_tenant_id", "oauth_consent", ["tenant_id"])


def downgrade() -> None:
    op.drop_index("ix_oauth_consent_tenant_id", table_name="oauth_consent")
    op.drop_table("oauth_consent")
    op.drop_index("ix_oauth_grant_tenant_id", table_name="oauth_grant")
    op.drop_table("oauth_grant")
