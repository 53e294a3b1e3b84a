"""Encryption at rest for IMAP/SMTP passwords.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`. The key comes from
``CRM_INBOX_SECRET_KEY`` or from a key file created with mode 0600 on first use. Plaintext
secrets only ever live in memory for the duration of a connection; `SecretStr`-like wrappers keep
them out of reprs and log lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from crm.errors import CrmError
from crm.settings import Settings, get_settings


class SecretKeyError(CrmError):
    """The encryption key is missing, unreadable or wrong."""


class Secret:
    """A plaintext secret that never shows itself in repr/str (so never in a log line)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _load_or_create_key(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes starting at once must not write two different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise SecretKeyError(
                "The secret key is not a valid Fernet key (32 url-safe base64 bytes). "
                "Generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`."
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SecretBox:
        settings = settings or get_settings()
        if settings.secret_key:
            return cls(settings.secret_key.encode())
        return cls(_load_or_create_key(settings.resolved_key_file))

    def encrypt(self, secret: Secret) -> str:
        return self._fernet.encrypt(secret.reveal().encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> Secret:
        try:
            return Secret(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except InvalidToken as exc:
            raise SecretKeyError(
                "A stored password cannot be decrypted with the current key: the key changed "
                "since it was saved. Restore the old key or enter the account's password again."
            ) from exc
