"""The errors `sync` raises. Library exceptions (imaplib, ssl, socket) are translated at the edge
in `imap.py`, so callers catch these and show `str(error)`: a sentence a user can act on.

Messages never contain a password, and never echo what a server sent back (a banner or a
NO/BAD text may come from anything listening on that port).
"""

from __future__ import annotations

from core.types import AccountStatus


class SyncError(Exception):
    """Root of every sync error. `status` is what the account shows; `transient` says whether
    retrying later (with backoff) may help."""

    status: AccountStatus = AccountStatus.ERROR
    transient: bool = True


class AuthFailed(SyncError):
    """The server refused the username/password."""

    status = AccountStatus.AUTH_FAILED
    transient = False

    def __init__(self, host: str, username: str) -> None:
        super().__init__(
            f"Authentication failed for {username} on {host}: the server refused the username or "
            "password. Check them; if the provider password changed recently or two-step "
            "verification is on, create a new app password and update the account."
        )


class CertificateUntrusted(SyncError):
    status = AccountStatus.TLS_ERROR
    transient = False

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"The TLS certificate of {host}:{port} is not trusted ({reason}). If the server uses "
            "a self-signed or private certificate authority, give its CA file to the account "
            "(--ca-file); do not turn verification off."
        )


class TlsFailed(SyncError):
    status = AccountStatus.TLS_ERROR
    transient = False

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"Could not set up TLS with {host}:{port} ({reason}). Check the port and security "
            "setting: 993 is usually implicit TLS, 143 STARTTLS. crm-inbox never falls back to "
            "plaintext on its own."
        )


class HostNotFound(SyncError):
    status = AccountStatus.HOST_NOT_FOUND

    def __init__(self, host: str) -> None:
        super().__init__(f"The host name {host!r} could not be resolved. Check its spelling.")


class ConnectionRefused(SyncError):
    status = AccountStatus.CONNECTION_FAILED

    def __init__(self, host: str, port: int) -> None:
        super().__init__(
            f"{host}:{port} refused the connection: nothing is listening on that port, or a "
            "firewall rejects it. Check the port number."
        )


class ConnectionTimedOut(SyncError):
    status = AccountStatus.CONNECTION_FAILED

    def __init__(self, host: str, port: int, seconds: float) -> None:
        super().__init__(
            f"{host}:{port} did not answer within {seconds:g} s. The server may be down or a "
            "firewall drops the traffic; crm-inbox will retry later."
        )


class ConnectionLost(SyncError):
    status = AccountStatus.CONNECTION_FAILED

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(f"The connection to {host} was lost ({detail}); crm-inbox will retry later.")


class BlockedHost(SyncError):
    """The host resolves to an address this deployment does not allow (SSRF guard)."""

    status = AccountStatus.HOST_NOT_FOUND
    transient = False

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"Connecting to {host!r} is not allowed: {reason}.")


class FolderMissing(SyncError):
    status = AccountStatus.FOLDER_MISSING

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} Create the folder on the mail server, or check that this account is the right mailbox."
        )


class UidValidityUnstable(SyncError):
    transient = False

    def __init__(self, folder: str) -> None:
        super().__init__(
            f"The UIDVALIDITY of {folder} keeps changing, so its mail cannot be tracked reliably; "
            "syncing of this folder is paused. Check the mail server, then reset the folder "
            "(crm-inbox account reset-folder)."
        )


class CredentialsUnreadable(SyncError):
    """The stored password cannot be decrypted (the encryption key changed)."""

    status = AccountStatus.NEEDS_CREDENTIALS
    transient = False


class StorageUnavailable(SyncError):
    """The database is locked or unreachable: nothing is wrong with the mail, retry later."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"The database could not be written ({kind}); the sync will resume from the last saved batch."
        )


class LeaseLost(SyncError):
    """Another worker took this account over (this one stalled past its lease)."""

    def __init__(self) -> None:
        super().__init__("Another worker took over this account; this worker stopped before writing.")


class ProtocolError(SyncError):
    """The server answered something we cannot use (NO/BAD or a malformed response)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"The IMAP server rejected or garbled a command while {what}; will retry later.")


class MessageFetchFailed(SyncError):
    """One message could not be fetched; counted towards its quarantine."""

    def __init__(self, uid: int, reason: str) -> None:
        self.uid = uid
        super().__init__(f"Message UID {uid} could not be fetched: {reason}.")
