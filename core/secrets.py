"""Encryption at rest for IMAP/SMTP passwords.

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`. The key comes from
``CRM_INBOX_SECRET_KEY`` or from a key file created with mode 0600 on first use. Plaintext
secrets only ever live in memory for the duration of a connection, as pydantic's `SecretStr`,
which keeps them out of reprs and log lines.
"""

from __future__ import annotations

import hashlib
import hmac
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

    def can_decrypt(self, token: str) -> bool:
        try:
            self._fernet.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def decrypt(self, token: str) -> SecretStr:
        try:
            return SecretStr(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except InvalidToken as exc:
            raise SecretKeyError(
                "secret_undecryptable",
                "A stored password cannot be decrypted with the current key: the key changed "
                "since it was saved. Restore the old key or enter the account's password again.",
            ) from exc


def derived_key(purpose: str, settings: Settings | None = None) -> bytes:
    """A key for one purpose (signing the image proxy's URLs, ...) derived from the secret key:
    one secret to keep, and a leak of a derived key reveals neither the others nor the key."""
    settings = settings or get_settings()
    if settings.secret_key:
        base = settings.secret_key.encode()
    else:
        base = _load_or_create_key(settings.resolved_key_file)
    return hmac.new(base, b"crm-inbox derived key: " + purpose.encode(), hashlib.sha256).digest()


def new_key() -> bytes:
    return Fernet.generate_key()


def existing_box(settings: Settings | None = None) -> SecretBox:
    """The current key, never a new one (rotation must start from the key in use)."""
    settings = settings or get_settings()
    if settings.secret_key:
        return SecretBox(settings.secret_key.encode())
    path = settings.resolved_key_file
    try:
        return SecretBox(path.read_bytes().strip())
    except FileNotFoundError as exc:
        raise SecretKeyError(
            "secret_key_missing", f"The encryption key file {str(path)!r} is missing.", path=str(path)
        ) from exc


def stage_key_file(path: Path, key: bytes) -> Path:
    """Write `key` beside the key file (`secret.key.new`, 0600) before any secret uses it, so a
    crash mid-rotation leaves both keys on disk."""
    staged = path.with_name(path.name + ".new")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
        handle.flush()
        os.fsync(handle.fileno())
    return staged


def activate_key_file(path: Path) -> Path:
    """The staged key becomes the key file; the old one is kept as `secret.key.old` (0600)."""
    old = path.with_name(path.name + ".old")
    os.replace(path, old)
    os.replace(path.with_name(path.name + ".new"), path)
    return old
