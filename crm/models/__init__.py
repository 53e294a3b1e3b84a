"""SQLModel tables, grouped: tenancy, mail, records, sync state. Schema changes go through Alembic
(migrations/), never `create_all`.

Only `crm` services (and the sync store) touch these rows; faces (CLI, HTTP API) get views.
"""

from crm.models.auth import ApiToken, LoginFailure, UserPassword, WebSession
from crm.models.conversations import Activity, AssignmentRule, Note, Presence, ThreadRead, ThreadSplit
from crm.models.mail import Message, MessageRef, SkippedMessage, Thread, ThreadAccount
from crm.models.outbound import (
    Draft,
    LimitUnit,
    MailKind,
    MessageIdKey,
    NotificationPref,
    NotificationTemplate,
    OutboundAccount,
    OutboundMail,
    OutboundState,
    SenderName,
    SenderVerification,
    SendingMode,
    SendPhase,
    TenantMailSettings,
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
    "Draft",
    "FetchFailure",
    "FolderState",
    "ImapUid",
    "LimitUnit",
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
    "NotificationPref",
    "NotificationTemplate",
    "OutboundAccount",
    "OutboundMail",
    "OutboundState",
    "Presence",
    "SendPhase",
    "SenderName",
    "SenderVerification",
    "SendingMode",
    "Signature",
    "SkippedMessage",
    "SyncRun",
    "Tenant",
    "TenantMailSettings",
    "Thread",
    "ThreadAccount",
    "ThreadRead",
    "ThreadSplit",
    "User",
    "UserPassword",
    "WebSession",
]
