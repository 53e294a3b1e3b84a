"""Encryption at rest for IMAP/SMTP passwords.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`. The key comes from
``CRM_INBOX_SECRET_KEY`` or from a key file created with mode 0600 on first use. Plaintext
secrets only ever live in memory for the duration of a connection, as pydantic's `SecretStr`,
which keeps them out of reprs and log lines.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from core.errors import InternalError
from core.settings import Settings, get_settings


class SecretKeyError(InternalError):
    """The encryption key is missing, unreadable or wrong (code `secret_key_invalid`, or
    `secret_undecryptable` when a stored secret was encrypted with another key)."""


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
                "secret_key_invalid",
                "The secret key is not a valid Fernet key (32 url-safe base64 bytes). "
                "Generate one with `python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'`.",
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SecretBox:
        settings = settings or get_settings()
        if settings.secret_key:
            return cls(settings.secret_key.encode())
        return cls(_load_or_create_key(settings.resolved_key_file))

    def encrypt(self, secret: SecretStr) -> str:
        return self._fernet.encrypt(secret.get_secret_value().encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except InvalidToken as exc:
            raise SecretKeyError(
                "secret_undecryptable",
                "A stored password cannot be decrypted with the current key: the key changed "
                "since it was saved. Restore the old key or enter the account's password again.",
            ) from exc
