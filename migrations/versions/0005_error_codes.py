"""Account and folder errors stored as a code and its parameters, rendered when shown

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("mail_account", "folder_state")


def upgrade() -> None:
    bind = op.get_bind()
    for name in _TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("last_error_code", sa.String(length=64), nullable=True))
            batch_op.add_column(
                sa.Column("last_error_params", sa.JSON(), nullable=False, server_default="{}")
            )
        # An error stored as a sentence before 0005 is kept, word for word, under a code of its own.
        table = sa.table(
            name,
            sa.column("id", sa.Integer),
            sa.column("last_error", sa.Text),
            sa.column("last_error_code", sa.String),
            sa.column("last_error_params", sa.JSON),
        )
        rows = bind.execute(sa.select(table.c.id, table.c.last_error).where(table.c.last_error.is_not(None)))
        for row_id, text in rows.all():
            bind.execute(
                table.update()
                .where(table.c.id == row_id)
                .values(last_error_code="stored_text", last_error_params={"text": text})
            )
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column("last_error")


def downgrade() -> None:
    for name in _TABLES:
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_column("last_error_params")
            batch_op.drop_column("last_error_code")
