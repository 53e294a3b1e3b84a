"""SQLModel tables, grouped: tenancy, mail, records, sync state. Schema changes go through Alembic
(migrations/), never `create_all`.

Only `crm` services (and the sync store) touch these rows; faces (CLI, HTTP API) get views.
"""

from crm.models.auth import ApiToken, LoginFailure, UserPassword, WebSession
from crm.models.conversations import (
    Activity,
    AssignmentRule,
    ImageSender,
    Note,
    Presence,
    ThreadRead,
    ThreadSplit,
)
from crm.models.mail import Message, MessageRef, SkippedMessage, Thread, ThreadAccount
from crm.models.outbound import (
    MailKind,
    MessageIdKey,
    OutboundAccount,
    OutboundMail,
    OutboundState,
    SenderName,
    SendPhase,
)
from crm.models.records import (
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealContact,
    LinkSuppression,
    MessageAddress,
    MessageLink,
)
from crm.models.sync_state import FetchFailure, FolderState, ImapUid, SyncRun
from crm.models.tenancy import AccountAccess, MailAccount, Signature, Tenant, User

__all__ = [
    "AccountAccess",
    "Activity",
    "ApiToken",
    "AssignmentRule",
    "Company",
    "CompanyDomain",
    "Contact",
    "ContactEmail",
    "Deal",
    "DealContact",
    "FetchFailure",
    "FolderState",
    "ImageSender",
    "ImapUid",
    "LinkSuppression",
    "LoginFailure",
    "MailAccount",
    "MailKind",
    "Message",
    "MessageAddress",
    "MessageIdKey",
    "MessageLink",
    "MessageRef",
    "Note",
    "OutboundAccount",
    "OutboundMail",
    "OutboundState",
    "Presence",
    "SendPhase",
    "SenderName",
    "Signature",
    "SkippedMessage",
    "SyncRun",
    "Tenant",
    "Thread",
    "ThreadAccount",
    "ThreadRead",
    "ThreadSplit",
    "User",
    "UserPassword",
    "WebSession",
]
