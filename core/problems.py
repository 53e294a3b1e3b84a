"""Problems stored on a record (an account's or a folder's last error): a code and its parameters,
turned into a sentence only when shown. The sentence can then be reworded without touching stored
rows, and each face may word a code its own way (the HTTP API returns code + params as well).

The templates of every code that can be stored live here, in `core`, so that `crm` (which shows
an account) and `sync` (which raises the errors) share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# code -> template (str.format with the parameters). Codes are stable: scripts depend on them.
TEMPLATES: dict[str, str] = {
    # An error saved as a sentence before codes existed (migration 0005).
    "stored_text": "{text}",
    # A connection check failed and the settings were saved anyway (crm.mailboxes, forced save).
    "connection_check_failed": "{detail}",
}


class _Missing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def render(code: str | None, params: Mapping[str, Any] | None = None) -> str | None:
    """The sentence of a stored problem; None when there is none. Never raises: an unknown code
    (a newer version wrote it) is shown as the code."""
    if code is None:
        return None
    template = TEMPLATES.get(code)
    if template is None:
        return f"Error {code}."
    try:
        return template.format_map(_Missing(params or {}))
    except (ValueError, IndexError, AttributeError, KeyError):
        return f"Error {code}."
