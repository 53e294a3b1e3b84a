"""The root of every error the product raises on purpose: a stable code, its fields, a sentence.

Zulip's pattern (`ErrorCode` + `data_fields`): the domain says *what* went wrong as a code that
never changes once published (scripts, the API's clients and stored account errors depend on it)
and the facts behind it as plain fields; the sentence is written for the product's users and
never mentions a face (no CLI flag, no HTTP status). Each face turns the code into its own words:
the CLI adds hints with its flag names, the HTTP API picks a status from `kind` and returns
`{"code", "message", "fields"}`.

`kind` is the family of the error, which is all a face needs to choose a status or an exit code:
missing and forbidden are both NOT_FOUND, so nobody learns that an id exists elsewhere.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from pydantic_core import to_jsonable_python


class ErrorKind(enum.StrEnum):
    NOT_FOUND = "not_found"  # missing, or not visible to the caller: the same answer
    INVALID = "invalid"  # the input is wrong; fixing it makes the call work
    CONFLICT = "conflict"  # the current state forbids it (duplicate, in use, limit reached)
    FORBIDDEN = "forbidden"  # the caller's role may not do this at all (not about one record)
    UNAUTHENTICATED = "unauthenticated"  # no valid credentials
    UNAVAILABLE = "unavailable"  # a server or the database did not answer; retrying may help
    INTERNAL = "internal"  # our configuration is broken (e.g. the secret key changed)


class DomainError(Exception):
    """An error with a stable `code`, JSON-serializable `fields`, and a user-facing `message`.

    Subclasses fix the `kind`; the code is given where the error is raised, so one family
    (say `InvalidInput`) carries many precise codes (`invalid_port`, `invalid_email`, ...).
    """

    kind: ClassVar[ErrorKind] = ErrorKind.INVALID

    def __init__(self, code: str, message: str, /, **fields: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # Fields leave the process (API bodies, JSON output, stored errors): plain values only.
        self.fields: dict[str, Any] = to_jsonable_python(fields)

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "kind": self.kind.value, "message": self.message, "fields": self.fields}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, fields={self.fields!r})"


class NotFound(DomainError):
    """Missing, or not visible to the caller (the same answer for both)."""

    kind = ErrorKind.NOT_FOUND

    def __init__(self, code: str = "not_found", message: str | None = None, /, **fields: Any) -> None:
        what = str(fields.get("what", "record")).replace("_", " ")
        ident = fields.get("id")
        default = f"No {what} with id {ident}." if ident is not None else f"No such {what}."
        super().__init__(code, message or default, **fields)


class InvalidInput(DomainError):
    kind = ErrorKind.INVALID


class Conflict(DomainError):
    """The rules forbid it in the current state (with the reason in the message)."""

    kind = ErrorKind.CONFLICT


class QuotaExceeded(Conflict):
    pass


class Forbidden(DomainError):
    """The caller's role may not do this at all (an admin-only operation asked by a member)."""

    kind = ErrorKind.FORBIDDEN


class Unauthenticated(DomainError):
    kind = ErrorKind.UNAUTHENTICATED


class Unavailable(DomainError):
    kind = ErrorKind.UNAVAILABLE


class InternalError(DomainError):
    kind = ErrorKind.INTERNAL


def not_found(what: str, ident: object) -> NotFound:
    """The one 'not found' for a record kind: the same for missing and for not visible."""
    return NotFound(f"{what}_not_found", None, what=what, id=ident)
