"""The errors `sync` raises. Library exceptions (imaplib, ssl, socket) are translated at the edge
in `imap.py` and `smtp_check.py`, so callers catch these.

Each error is a `core.errors.DomainError`: a stable `code` (`auth_failed`, `connection_refused`,
...), the facts as `fields` (host, port, username, folder, seconds, reason ...) and a sentence
built from `core.problems.TEMPLATES`, the same template that renders the problem once it is
stored on an account or a folder. The family (`kind`) is what a face needs: INVALID when the
settings must change (credentials, certificate, blocked host), UNAVAILABLE when a server or the
database did not answer. `transient` says whether the sync retries later with backoff; which
status an account shows for a code is decided in `crm.sync_state`, not here.

Messages never contain a password, and never echo what a server sent back (a banner or a
NO/BAD text may come from anything listening on that port).
"""

from __future__ import annotations

from typing import Any, ClassVar

from core import problems
from core.errors import Conflict, DomainError, InternalError, InvalidInput, Unavailable


class SyncError(DomainError):
    """Root of every sync error. `transient`: retrying later (with backoff) may help."""

    code_name: ClassVar[str] = "sync_error"
    transient: ClassVar[bool] = True

    def __init__(self, **fields: Any) -> None:
        super().__init__(self.code_name, problems.message(self.code_name, fields), **fields)

    @property
    def params(self) -> dict[str, Any]:
        """What is stored with the code (the same as `fields`)."""
        return self.fields


class AuthFailed(SyncError, InvalidInput):
    """The server refused the username/password."""

    code_name = "auth_failed"
    transient = False

    def __init__(self, host: str, username: str) -> None:
        super().__init__(host=host, username=username)


class CertificateUntrusted(SyncError, InvalidInput):
    code_name = "certificate_untrusted"
    transient = False

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(host=host, port=port, reason=reason)


class TlsFailed(SyncError, InvalidInput):
    code_name = "tls_failed"
    transient = False

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(host=host, port=port, reason=reason)


class HostNotFound(SyncError, InvalidInput):
    """The name does not resolve: usually a typo (retried anyway: DNS may be down)."""

    code_name = "host_not_found"

    def __init__(self, host: str) -> None:
        super().__init__(host=host)


class ConnectionRefused(SyncError, Unavailable):
    code_name = "connection_refused"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host=host, port=port)


class ConnectionTimedOut(SyncError, Unavailable):
    code_name = "connection_timed_out"

    def __init__(self, host: str, port: int, seconds: float) -> None:
        super().__init__(host=host, port=port, seconds=seconds)


class ConnectionLost(SyncError, Unavailable):
    code_name = "connection_lost"

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host=host, reason=reason)


class BlockedHost(SyncError, InvalidInput):
    """The host resolves to an address this deployment does not allow (SSRF guard)."""

    code_name = "host_blocked"
    transient = False

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host=host, reason=reason)


class FolderMissing(SyncError, InvalidInput):
    """A folder the sync needs is not on the server."""

    code_name = "folder_missing"

    def __init__(self) -> None:
        super().__init__()


class InboxMissing(FolderMissing):
    code_name = "inbox_missing"


class SentFolderMissing(FolderMissing):
    """Only INBOX can be synced; the account still works."""

    code_name = "sent_folder_missing"


class UidValidityUnstable(SyncError, Conflict):
    """The folder is paused until an administrator resets it."""

    code_name = "uidvalidity_unstable"
    transient = False

    def __init__(self, folder: str) -> None:
        super().__init__(folder=folder)


class CredentialsUnreadable(SyncError, InternalError):
    """The stored password cannot be decrypted (the encryption key changed)."""

    code_name = "credentials_unreadable"
    transient = False

    def __init__(self) -> None:
        super().__init__()


class StorageUnavailable(SyncError, Unavailable):
    """The database is locked or unreachable: nothing is wrong with the mail, retry later."""

    code_name = "storage_unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(reason=reason)


class LeaseLost(SyncError, Conflict):
    """Another worker took this account over (this one stalled past its lease)."""

    code_name = "lease_lost"

    def __init__(self) -> None:
        super().__init__()


class ProtocolError(SyncError, Unavailable):
    """The server answered something we cannot use (NO/BAD or a malformed response)."""

    code_name = "protocol_error"

    def __init__(self, doing: str) -> None:
        super().__init__(doing=doing)


class MessageFetchFailed(SyncError, Unavailable):
    """One message could not be fetched; counted towards its quarantine."""

    code_name = "message_fetch_failed"

    def __init__(self, uid: int, reason: str) -> None:
        self.uid = uid
        super().__init__(uid=uid, reason=reason)


class UnexpectedError(SyncError, InternalError):
    """A bug met while syncing one account: logged with its traceback, the others go on."""

    code_name = "sync_unexpected"

    def __init__(self, error_type: str) -> None:
        super().__init__(error_type=error_type)


class FolderUnexpected(SyncError, InternalError):
    """A bug met in one folder: logged with its traceback; the other folder is synced and this
    one retried at the next pass."""

    code_name = "folder_unexpected"

    def __init__(self, error_type: str, folder: str) -> None:
        super().__init__(error_type=error_type, folder=folder)


class CommandTimedOut(SyncError, Unavailable):
    """One command overran its deadline (a server trickling its answer): the pass stops and
    resumes from its last committed batch later."""

    code_name = "command_timed_out"

    def __init__(self, host: str, doing: str, seconds: float) -> None:
        super().__init__(host=host, doing=doing, seconds=seconds)


class PassTimedOut(SyncError, Unavailable):
    """One account's pass overran its deadline; it resumes from its last committed batch."""

    code_name = "pass_timed_out"

    def __init__(self, host: str, seconds: float) -> None:
        super().__init__(host=host, seconds=seconds)


class Interrupted(SyncError, Unavailable):
    """The worker is stopping (SIGTERM): the command in flight was cut short."""

    code_name = "sync_interrupted"

    def __init__(self) -> None:
        super().__init__()
