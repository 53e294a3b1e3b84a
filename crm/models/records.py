"""CRM records (companies, contacts, deals) and the links of mail to them, with their reasons."""

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import StrEnumType
from crm.models._columns import created, json_column, timestamp
from crm.rules.linking import AddressRole, ContactSource, DealStatus, LinkReason, RecordKind


class Company(SQLModel, table=True):
    __tablename__ = "company"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=300)
    created_at: datetime = created()


class CompanyDomain(SQLModel, table=True):
    __tablename__ = "company_domain"
    __table_args__ = (UniqueConstraint("tenant_id", "domain"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    company_id: int = Field(foreign_key="company.id", index=True)
    domain: str = Field(max_length=255)


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (Index("ix_contact_owner", "tenant_id", "owner_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    first_name: str = Field(default="", max_length=200)
    last_name: str = Field(default="", max_length=200)
    full_name: str = Field(default="", max_length=400)
    phone: str = Field(default="", max_length=100)
    company_id: int | None = Field(default=None, foreign_key="company.id", index=True)
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    source: ContactSource = Field(
        default=ContactSource.MANUAL, sa_type=StrEnumType(ContactSource), nullable=False
    )
    created_at: datetime = created()


class ContactEmail(SQLModel, table=True):
    __tablename__ = "contact_email"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    contact_id: int = Field(foreign_key="contact.id", index=True)
    email: str = Field(max_length=320)  # lower-cased


class Deal(SQLModel, table=True):
    __tablename__ = "deal"
    # The tenant's stages, read by every sidebar count from the index alone (0026).
    __table_args__ = (Index("ix_deal_tenant_stage", "tenant_id", "stage"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    title: str = Field(max_length=300)
    stage: str = Field(default="new", max_length=100)
    amount: float | None = None
    currency: str = Field(default="EUR", max_length=3)
    status: DealStatus = Field(default=DealStatus.OPEN, sa_type=StrEnumType(DealStatus), nullable=False)
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    company_id: int | None = Field(default=None, foreign_key="company.id")
    created_at: datetime = created()


class DealContact(SQLModel, table=True):
    __tablename__ = "deal_contact"
    __table_args__ = (UniqueConstraint("deal_id", "contact_id"),)

    id: int | None = Field(default=None, primary_key=True)
    deal_id: int = Field(foreign_key="deal.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)


class MessageAddress(SQLModel, table=True):
    """Every address of a message, indexed: a contact or domain added later finds its mail with
    an index lookup (targeted backfill), never a scan of all mail."""

    __tablename__ = "message_address"
    __table_args__ = (
        UniqueConstraint("message_pk", "role", "email"),
        Index("ix_message_address_email", "tenant_id", "email"),
        Index("ix_message_address_domain", "tenant_id", "domain"),
        Index("ix_message_address_base_domain", "tenant_id", "base_domain"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_pk: int = Field(foreign_key="message.id", index=True)
    role: AddressRole = Field(sa_type=StrEnumType(AddressRole), nullable=False)
    email: str = Field(max_length=320)
    domain: str = Field(max_length=255)
    # registrable_domain(domain), 0004: finds a company domain's mail and its subdomains' by index.
    base_domain: str = Field(default="", max_length=255)


class MessageLink(SQLModel, table=True):
    """A message on a CRM record, with the reason it is there ("why is this mail on this deal")."""

    __tablename__ = "message_link"
    __table_args__ = (
        UniqueConstraint("message_pk", "record_kind", "record_id"),
        Index("ix_message_link_record", "tenant_id", "record_kind", "record_id", "message_pk"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_pk: int = Field(foreign_key="message.id", index=True)
    record_kind: RecordKind = Field(sa_type=StrEnumType(RecordKind), nullable=False)
    record_id: int
    reason: LinkReason = Field(sa_type=StrEnumType(LinkReason), nullable=False)
    detail: str = Field(default="", sa_type=Text)
    created_by_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = created()


class LinkSuppression(SQLModel, table=True):
    """A user removed a record from a thread's mail: rules never put it back on that thread
    (replies, re-syncs, backfills) until a user links it again by hand."""

    __tablename__ = "link_suppression"
    __table_args__ = (UniqueConstraint("thread_id", "record_kind", "record_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    thread_id: int = Field(foreign_key="thread.id", index=True)
    record_kind: RecordKind = Field(sa_type=StrEnumType(RecordKind), nullable=False)
    record_id: int
    created_by_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = created()


class BackfillJob(SQLModel, table=True):
    """Already-synced mail still to be linked to records added in bulk (a CSV import).

    Written in the same transaction as the records, worked off after the commit in short chunks
    (`crm.backfill`), each chunk advancing `position` (keys done: the emails, then the domains)
    and `message_cursor` (within the current keys, the highest message id linked). A crash
    between two chunks leaves the job unfinished; running it again resumes where it stopped and
    linking is idempotent, so nothing is lost or linked twice."""

    __tablename__ = "backfill_job"
    __table_args__ = (Index("ix_backfill_job_pending", "tenant_id", "finished_at"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    emails: list[str] = json_column(list)
    domains: list[str] = json_column(list)
    position: int = 0
    message_cursor: int = 0
    messages_linked: int = 0
    links_added: int = 0
    created_at: datetime = created()
    finished_at: datetime | None = timestamp()
