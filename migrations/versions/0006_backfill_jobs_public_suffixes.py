"""backfill jobs (imports linked in short chunks); base_domain from the Public Suffix List; enum columns

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Columns whose values became enums (StrEnumType: a VARCHAR(32) holding the same values).
_ENUM_COLUMNS = (
    ("contact", "source", 20),
    ("deal", "status", 10),
    ("message_address", "role", 10),
    ("message_link", "record_kind", 10),
    ("message_link", "reason", 20),
    ("link_suppression", "record_kind", 10),
)


def upgrade() -> None:
    for table, column, length in _ENUM_COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=length),
                type_=sa.String(length=32),
                existing_nullable=False,
            )
    _recompute_base_domains()
    op.create_table(
        "backfill_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("emails", sa.JSON(), nullable=False),
        sa.Column("domains", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("message_cursor", sa.Integer(), nullable=False),
        sa.Column("messages_linked", sa.Integer(), nullable=False),
        sa.Column("links_added", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backfill_job_pending", "backfill_job", ["tenant_id", "finished_at"], unique=False)


def _recompute_base_domains() -> None:
    """message_address.base_domain from the Public Suffix List instead of 0004's guess (which
    put every NHS trust under "nhs.uk" and every GitHub Pages site under "github.io"): one UPDATE
    per distinct domain whose value changes. The rule lives in crm.rules.linking."""
    from crm.rules.linking import registrable_domain

    bind = op.get_bind()
    table = sa.table("message_address", sa.column("domain", sa.String), sa.column("base_domain", sa.String))
    rows = bind.execute(sa.select(table.c.domain, table.c.base_domain).distinct()).all()
    for domain, stored in rows:
        base = registrable_domain(domain or "")[:255]
        if base != stored:
            bind.execute(table.update().where(table.c.domain == domain).values(base_domain=base))


def downgrade() -> None:
    """The backfill table goes and the columns shrink back (their values fit); base_domain keeps
    the Public Suffix List's values: 0004's guess is gone, and they are valid for it too (the
    index only groups an address with its registrable domain)."""
    op.drop_index("ix_backfill_job_pending", table_name="backfill_job")
    op.drop_table("backfill_job")
    for table, column, length in _ENUM_COLUMNS:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                column,
                existing_type=sa.String(length=32),
                type_=sa.String(length=length),
                existing_nullable=False,
            )
