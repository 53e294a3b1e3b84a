"""`crm-inbox secrets rotate-key`: a new encryption key for the stored IMAP/SMTP passwords.

With the key file (the default): the new key is written beside it first (`secret.key.new`),
every password is re-encrypted in one transaction, then the new key replaces the file and the
old one is kept as `secret.key.old` (delete it once the workers run with the new key). With
`CRM_INBOX_SECRET_KEY`: the passwords are re-encrypted and the new key is printed once; set it
in the environment of every worker and restart them (until then they report a key mismatch and
resume by themselves once they have it).
"""

from __future__ import annotations

from typing import Any

import typer

from core.db import session_scope
from core.secrets import SecretBox, activate_key_file, existing_box, new_key, stage_key_file
from core.settings import get_settings
from crm import sync_state
from crm_inbox.cli.common import JsonOpt, emit

secrets_app = typer.Typer(help="The encryption key of stored passwords.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate-key")
def rotate_key(as_json: JsonOpt = False) -> None:
    """Re-encrypt every stored password with a new key (all or nothing)."""
    settings = get_settings()
    old = existing_box(settings)
    key = new_key()
    result: dict[str, Any] = {}
    if settings.secret_key:
        with session_scope() as session:
            result["accounts"] = sync_state.reencrypt_secrets(session=session, old=old, new=SecretBox(key))
        result["new_key"] = key.decode()
        text = (
            f"Re-encrypted the passwords of {result['accounts']} accounts. Set CRM_INBOX_SECRET_KEY to "
            f"this new key for every worker and restart them:\n{result['new_key']}"
        )
    else:
        path = settings.resolved_key_file
        stage_key_file(path, key)
        with session_scope() as session:
            result["accounts"] = sync_state.reencrypt_secrets(session=session, old=old, new=SecretBox(key))
        result["old_key_file"] = str(activate_key_file(path))
        result["key_file"] = str(path)
        text = (
            f"Re-encrypted the passwords of {result['accounts']} accounts with a new key in {path}; "
            f"the old key is in {result['old_key_file']} (delete it once every worker has restarted)."
        )
    emit(as_json, result, text)
