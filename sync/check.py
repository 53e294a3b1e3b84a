"""Connection check before an account is saved: log in, find the folders, log out."""

from __future__ import annotations

from dataclasses import dataclass

from crm.secrets import Secret
from sync import imap
from sync.errors import SyncError
from sync.folders import pick_folders
from sync.types import FolderRole


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str
    inbox: str | None = None
    sent: str | None = None


def check_imap(endpoint: imap.ImapEndpoint, password: Secret) -> CheckResult:
    try:
        with imap.connect(endpoint, password) as conn:
            folders = pick_folders(conn.list_folders())
    except SyncError as exc:
        return CheckResult(ok=False, message=str(exc))
    sent = folders.get(FolderRole.SENT)
    message = (
        f"Logged in; INBOX found, Sent folder: {sent}" if sent else "Logged in; INBOX found, no Sent folder"
    )
    return CheckResult(ok=True, message=message, inbox=folders[FolderRole.INBOX], sent=sent)
