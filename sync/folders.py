"""Pure: which server folders to sync, from a LIST response.

Only INBOX and the Sent folder, never any other folder or subfolder. Sent is found by its
SPECIAL-USE attribute (RFC 6154) when the server offers one, else by the usual names, including
localized ones and the forms servers with an INBOX-rooted namespace use ("INBOX.Sent",
"INBOX/Sent").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from sync import errors
from sync.types import FolderInfo, FolderRole

SENT_NAMES: tuple[str, ...] = (
    "Sent",
    "Sent Items",
    "Sent Messages",
    "Sent Mail",
    "Sent-Mail",
    "[Gmail]/Sent Mail",
    "[Google Mail]/Sent Mail",
    "Éléments envoyés",
    "Messages envoyés",
    "Envoyés",
    "Enviados",
    "Elementos enviados",
    "Itens Enviados",
    "Mensagens Enviadas",
    "Gesendet",
    "Gesendete Elemente",
    "Gesendete Objekte",
    "Posta inviata",
    "Inviati",
    "Elementi inviati",
    "Verzonden",
    "Verzonden items",
    "Skickat",
    "Skickade objekt",
    "Sendt",
    "Sendte elementer",
    "Lähetetyt",
    "Wysłane",
    "Odeslané",
    "Отправленные",
    "Надіслані",
    "送信済みメール",
    "已发送",
    "보낸편지함",
)


def _key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold().strip()


_SENT_KEYS = {_key(n): rank for rank, n in enumerate(SENT_NAMES)}


def _selectable(folder: FolderInfo) -> bool:
    flags = {f.lower() for f in folder.flags}
    return "\\noselect" not in flags and "\\nonexistent" not in flags


def _sent_rank(folder: FolderInfo) -> int | None:
    """Rank of a folder name among SENT_NAMES, also accepting the INBOX-rooted forms."""
    key = _key(folder.name)
    if key in _SENT_KEYS:
        return _SENT_KEYS[key]
    if folder.delimiter:
        prefix = _key("INBOX" + folder.delimiter)
        if key.startswith(prefix):
            return _SENT_KEYS.get(key[len(prefix) :])
    return None


def pick_folders(folders: Sequence[FolderInfo]) -> dict[FolderRole, str]:
    """Map INBOX and Sent to server folder names. Raises FolderMissing without an INBOX; a
    mailbox without any Sent folder only gets INBOX (the engine reports the missing Sent)."""
    chosen: dict[FolderRole, str] = {}
    usable = [f for f in folders if _selectable(f)]
    for folder in usable:
        if folder.name.upper() == "INBOX":  # RFC 3501 5.1: INBOX is case-insensitive
            chosen[FolderRole.INBOX] = folder.name
            break
    if FolderRole.INBOX not in chosen:
        raise errors.InboxMissing()

    special = [f for f in usable if any(flag.lower() == "\\sent" for flag in f.flags)]
    if special:
        # Several \Sent folders (rare): prefer the one with a well-known name, then the shortest.
        special.sort(key=lambda f: (_sent_rank(f) is None, f.name.count(f.delimiter or "\0"), len(f.name)))
        chosen[FolderRole.SENT] = special[0].name
        return chosen
    ranked = [(rank, f.name) for f in usable if (rank := _sent_rank(f)) is not None]
    if ranked:
        chosen[FolderRole.SENT] = min(ranked)[1]
    return chosen
