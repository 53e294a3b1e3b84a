"""indexes for the reports (crm/reports.py)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 10:00:00

Each index comes from an EXPLAIN QUERY PLAN of a report query on the 20,000-message benchmark
database (bench/linking_bench.py), where it replaced a scan of the tenant's mail:

* message_link (tenant_id, record_kind, record_id, message_pk): the same lookup as before, now
  covering, so a report reads a record's message ids from the index alone (reports over all
  records of a kind about halve: activity by contact 310 -> 167 ms). Replaces the three-column
  ix_message_link_record, of which it is a superset.
* message (tenant_id, from_email): a user's sent mail ("outbound = From the user").
* message (tenant_id, attributed_user_id): a user's BCC-dropbox mail.
* contact (tenant_id, owner_user_id): the contacts a user owns (their inbound mail).

Hand-written: ix_message_link_record is dropped and re-created under the same name with the
extra column; SQLite and PostgreSQL both create indexes without rewriting the table.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_message_link_record", table_name="message_link")
    op.create_index(
        "ix_message_link_record",
        "message_link",
        ["tenant_id", "record_kind", "record_id", "message_pk"],
        unique=False,
    )
    op.create_index("ix_message_tenant_from", "message", ["tenant_id", "from_email"], unique=False)
    op.create_index(
        "ix_message_attributed_user", "message", ["tenant_id", "attributed_user_id"], unique=False
    )
    op.create_index("ix_contact_owner", "contact", ["tenant_id", "owner_user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_contact_owner", table_name="contact")
    op.drop_index("ix_message_attributed_user", table_name="message")
    op.drop_index("ix_message_tenant_from", table_name="message")
    op.drop_index("ix_message_link_record", table_name="message_link")
    op.create_index(
        "ix_message_link_record", "message_link", ["tenant_id", "record_kind", "record_id"], unique=False
    )
