"""message_address.base_domain: company-domain backfills by index, not LIKE scans

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("message_address", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("base_domain", sa.String(length=255), nullable=False, server_default="")
        )
        batch_op.create_index("ix_message_address_base_domain", ["tenant_id", "base_domain"], unique=False)
    # Existing rows: one UPDATE per distinct domain (the rule lives in crm.rules.linking).
    from crm.rules.linking import registrable_domain

    bind = op.get_bind()
    table = sa.table("message_address", sa.column("domain", sa.String), sa.column("base_domain", sa.String))
    for (domain,) in bind.execute(sa.select(table.c.domain).distinct()).all():
        base = registrable_domain(domain or "")[:255]
        if base:
            bind.execute(table.update().where(table.c.domain == domain).values(base_domain=base))


def downgrade() -> None:
    with op.batch_alter_table("message_address", schema=None) as batch_op:
        batch_op.drop_index("ix_message_address_base_domain")
        batch_op.drop_column("base_domain")
