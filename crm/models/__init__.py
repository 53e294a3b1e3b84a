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
from crm.models.forwarding import ForwardingChannel, InboundDelivery, Ticket
from crm.models.mail import (
    Message,
    MessageRef,
    SkippedMessage,
    Thread,
    ThreadAccount,
    ThreadDeal,
    ThreadTally,
)
from crm.models.oauth import OAuthConsent, OAuthGrant
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
    "ForwardingChannel",
    "ImageSender",
    "ImapUid",
    "InboundDelivery",
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
    "OAuthConsent",
    "OAuthGrant",
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
    "ThreadDeal",
    "ThreadRead",
    "ThreadSplit",
    "ThreadTally",
    "Ticket",
    "User",
    "UserPassword",
    "WebSession",
]
