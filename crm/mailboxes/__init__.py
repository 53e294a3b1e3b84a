"""Mailboxes (mail accounts): connect, edit, read settings for a test, lifecycle, list.

Admins connect, edit, deactivate and delete accounts; a member sees only the accounts granted
to them (`crm.access.account_visible`), and anything about another account is `account_not_found`.

No network and no long lock on a request path. Adding or editing an account is three steps:
1. validate: pure (`validate_new_account`), or a short read (`validation.plan_edit`);
2. verify the connection with NO database session open: `crm` does not import `sync`, so the
   check is injected (`verify`: `ConnectionSettings` -> anything with `ok` and `message`,
   `sync.check.make_verifier` in practice); `verify=None` means "do not check";
3. save in a short transaction that takes the tenant lock and checks the rules (quota,
   duplicates) again, so two admins adding accounts at once cannot both squeeze past the quota.
`connect_account` and `edit_account` run the steps with a session factory (`sessions`): each
step's transaction is committed and closed before the next, none is open during the check. A
failing check raises `ConnectionCheckFailed` and nothing is written, unless `force=True`: then
the settings are saved and the failure is kept as the account's last error.
"""

from crm.mailboxes.connect import (
    ConnectionCheckFailed,
    SessionFactory,
    Verifier,
    add_account,
    check_new_account,
    connect_account,
    connection_settings_of,
    edit_account,
    save_new_account,
    set_password,
)
from crm.mailboxes.lifecycle import deactivate_account, delete_account, reactivate_account
from crm.mailboxes.reading import get_account, list_accounts, list_skipped
from crm.mailboxes.validation import (
    DEFAULT_SMTP_PORTS,
    AccountChanges,
    AccountInput,
    NewAccount,
    SmtpInput,
    validate_new_account,
)
from crm.mailboxes.views import (
    AccountView,
    CheckView,
    FolderView,
    SaveResult,
    SkippedView,
    account_view,
    check_view,
)

__all__ = [
    "DEFAULT_SMTP_PORTS",
    "AccountChanges",
    "AccountInput",
    "AccountView",
    "CheckView",
    "ConnectionCheckFailed",
    "FolderView",
    "NewAccount",
    "SaveResult",
    "SessionFactory",
    "SkippedView",
    "SmtpInput",
    "Verifier",
    "account_view",
    "add_account",
    "check_new_account",
    "check_view",
    "connect_account",
    "connection_settings_of",
    "deactivate_account",
    "delete_account",
    "edit_account",
    "get_account",
    "list_accounts",
    "list_skipped",
    "reactivate_account",
    "save_new_account",
    "set_password",
    "validate_new_account",
]
