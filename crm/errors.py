"""The error families of `crm`, on the product-wide base in `core.errors` (code + fields).

TRANSITIONAL (issue 7): a bare message is accepted with the code "unspecified" until every raise
carries its own code; then this module only re-exports `core.errors`.
"""

from __future__ import annotations

from typing import Any

from core import errors as core_errors
from core.errors import DomainError


class _Transitional:
    def __init__(self, *args: Any, **fields: Any) -> None:
        if len(args) == 1:
            args = ("unspecified", args[0])
        super().__init__(*args, **fields)


class NotFound(_Transitional, core_errors.NotFound):
    pass


class InvalidInput(_Transitional, core_errors.InvalidInput):
    pass


class Refused(_Transitional, core_errors.Conflict):
    pass


class QuotaExceeded(_Transitional, core_errors.QuotaExceeded):
    pass


CrmError = DomainError
