"""Problems stored on a record (an account's or a folder's last error): a code and its parameters,
turned into a sentence only when shown. The sentence can then be reworded without touching stored
rows, and each face may word a code its own way (the HTTP API returns code + params as well).

The templates of every code that can be stored live here, in `core`, so that `crm` (which shows
an account) and `sync` (which raises the errors) share them without importing each other: the
sync errors build their messages from these same templates, so what was raised and what is
shown later read the same.

Sentences speak of the product, never of a face: no command-line flag, no command name, no
HTTP status (a face adds its own hint for a code).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_AUTH_FAILED = (
    "Authentication failed for {username} on {host}: the server refused the username or password. "
    "Check them; if the provider password changed recently or two-step verification is on, create "
    "a new app password and update the account."
)

# code -> template (str.format with the parameters). Codes are stable: scripts depend on them.
TEMPLATES: dict[str, str] = {
    # An error saved as a sentence before codes existed (migration 0005).
    "stored_text": "{text}",
    # A connection check failed and the settings were saved anyway (crm.mailboxes, forced save).
    "connection_check_failed": "{detail}",
    # Connecting and logging in (sync.errors, sync.smtp_check).
    "auth_failed": _AUTH_FAILED,
    # The account stopped retrying: a wrong password retried gets accounts locked by providers.
    "auth_stopped": _AUTH_FAILED + " Stopped retrying after {failures} refused logins.",
    "certificate_untrusted": (
        "The TLS certificate of {host}:{port} is not trusted ({reason}). If the server uses a "
        "self-signed or private certificate authority, give its CA file to the account; do not "
        "turn verification off."
    ),
    "tls_failed": (
        "Could not set up TLS with {host}:{port} ({reason}). Check the port and security setting: "
        "993 is usually implicit TLS, 143 STARTTLS. crm-inbox never falls back to plaintext on its own."
    ),
    "host_not_found": "The host name {host!r} could not be resolved. Check its spelling.",
    "host_blocked": "Connecting to {host!r} is not allowed: {reason}.",
    "connection_refused": (
        "{host}:{port} refused the connection: nothing is listening on that port, or a firewall "
        "rejects it. Check the port number."
    ),
    "connection_timed_out": (
        "{host}:{port} did not answer within {seconds:g} s. The server may be down or a firewall "
        "drops the traffic; crm-inbox will retry later."
    ),
    # OAuth2 (sync.oauth): the refresh token no longer works; a person must connect again.
    "oauth_reconnect_needed": (
        "{provider} no longer accepts this mailbox's authorization ({error}): it was revoked, it "
        "expired, or the password or security settings of the account changed. Connect the mailbox "
        "again; crm-inbox will not try until then."
    ),
    "oauth_disconnected": (
        "The mailbox was disconnected from {provider} by an administrator; connect it again to "
        "resume syncing and sending."
    ),
    "oauth_provider_unavailable": (
        "The sign-in service of {provider} could not be reached or failed ({reason}); crm-inbox will "
        "retry later."
    ),
    "oauth_device_failed": (
        "Signing in on another device did not complete at {provider} ({error}); nothing was saved."
    ),
    "oauth_not_connected": "Account {account_id} does not sign in with OAuth.",
    "oauth_refused": (
        "{provider} refused crm-inbox's request ({error}): the OAuth client id or secret in the "
        "settings may be wrong or no longer valid."
    ),
    "connection_lost": "The connection to {host} was lost ({reason}); crm-inbox will retry later.",
    "protocol_error": "The IMAP server rejected or garbled a command while {doing}; will retry later.",
    "smtp_starttls_missing": (
        "{host}:{port} does not offer STARTTLS, so the password cannot be sent encrypted. Check the "
        "port and security setting: 587 is usually STARTTLS, 465 implicit TLS. crm-inbox never "
        "falls back to plaintext on its own."
    ),
    "smtp_tls_failed": (
        "Could not set up TLS with {host}:{port} ({reason}). Check the port and security setting: "
        "465 is usually implicit TLS, 587 STARTTLS."
    ),
    "smtp_auth_unavailable": (
        "{host}:{port} offers no password login on this connection. Many servers only allow it "
        "after STARTTLS or on the implicit TLS port: check the security setting and port."
    ),
    "smtp_rejected": (
        "The SMTP server {host}:{port} rejected or garbled a command while {doing}. Check that this "
        "host and port are the provider's outgoing (submission) server."
    ),
    # Folders.
    "inbox_missing": (
        "The server lists no INBOX for this account. Create the folder on the mail server, or "
        "check that this account is the right mailbox."
    ),
    "sent_folder_missing": (
        "No Sent folder was found (no folder marked \\Sent, and none of the usual names such as "
        "Sent, Sent Items or Éléments envoyés); only INBOX was synced. Create the folder on the "
        "mail server, or check that this account is the right mailbox."
    ),
    "uidvalidity_unstable": (
        "The UIDVALIDITY of {folder} keeps changing, so its mail cannot be tracked reliably; syncing "
        "of this folder is paused. Check the mail server, then reset the folder."
    ),
    # Several folder problems of one pass, each {"code", "params", "folder"} (see `render`).
    "folder_problems": "{problems}",
    # The worker's side.
    "credentials_unreadable": (
        "Key mismatch: a stored password cannot be decrypted with the current encryption key (the "
        "key changed since it was saved). Restore the old key and the account resumes by itself, "
        "with no password to enter again; or enter the account's password again."
    ),
    "storage_unavailable": (
        "The database could not be written ({reason}); the sync will resume from the last saved batch."
    ),
    "lease_lost": "Another worker took over this account; this worker stopped before writing.",
    "command_timed_out": (
        "{host} answered too slowly while {doing} (over {seconds:g} s); the sync resumes from "
        "the last saved batch at the next pass."
    ),
    "pass_timed_out": (
        "Syncing with {host} took longer than {seconds:g} s and was stopped; it resumes from the "
        "last saved batch at the next pass."
    ),
    "sync_interrupted": (
        "The sync was stopped (the worker is shutting down); it resumes from the last saved batch."
    ),
    "message_fetch_failed": "Message UID {uid} could not be fetched: {reason}.",
    "sync_unexpected": "Unexpected error ({error_type}); details are in the worker log.",
    "folder_unexpected": (
        "Unexpected error ({error_type}) while syncing {folder}; the other folder was synced and "
        "this one is retried at the next pass. Details are in the worker log."
    ),
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _one(code: str, params: Mapping[str, Any]) -> str:
    template = TEMPLATES.get(code)
    if template is None:
        return f"Error {code}."
    try:
        return template.format_map(_Missing(params))
    except (ValueError, IndexError, AttributeError, KeyError, TypeError):
        return f"Error {code}."


def render(code: str | None, params: Mapping[str, Any] | None = None) -> str | None:
    """The sentence of a stored problem; None when there is none. Never raises: an unknown code
    (a newer version wrote it) is shown as the code."""
    if code is None:
        return None
    params = params or {}
    if code == "folder_problems":
        # One sentence per folder problem, prefixed with its folder when it has one.
        parts = []
        for item in params.get("problems") or ():
            if not isinstance(item, Mapping):
                continue
            text = _one(str(item.get("code")), item.get("params") or {})
            parts.append(f"{item['folder']}: {text}" if item.get("folder") else text)
        return " ".join(parts) or f"Error {code}."
    return _one(code, params)


def message(code: str, params: Mapping[str, Any] | None = None) -> str:
    """`render` for a code that is certainly there (an error being raised)."""
    return render(code, params) or f"Error {code}."
