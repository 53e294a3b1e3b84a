"""Column helpers shared by the tables: UTC timestamps and JSON columns, portable across SQLite
and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field

from core.types import UTCDateTime, utcnow


def timestamp(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def json_column(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))
