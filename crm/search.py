"""Full-text search over mail: subject, participants and bodies, accents and case folded.

The index is built in SQL by migration 0009 (SQLite FTS5 with triggers; PostgreSQL a GIN index
on `crm_search_vector(...)`); this module turns what a user typed into a safe query for the
dialect in use. A user's words never reach the query syntax as is: they are folded and reduced to
letters and digits, each one a prefix term, all of them required ("glob inv" finds "Globex
invoice").
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from sqlalchemy import ColumnElement, Select, func, literal_column, select, text
from sqlmodel import Session, col

from crm.models import Message

MAX_TERMS = 8
MIN_TERM = 2
_WORD = re.compile(r"\w+", re.UNICODE)


def fold(value: str) -> str:
    """Lower case without accents ("Müller" -> "muller"), as both indexes store words."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def terms(query: str) -> list[str]:
    words = [w for w in _WORD.findall(fold(query)) if len(w) >= MIN_TERM or w.isdigit()]
    seen: list[str] = []
    for word in words:
        if word not in seen:
            seen.append(word)
    return seen[:MAX_TERMS]


def matching_messages(session: Session, query: str) -> ColumnElement[bool] | None:
    """A WHERE clause on `Message`: the messages whose text matches every term (None: the query
    has no searchable word, and the caller should not filter on it)."""
    words = terms(query)
    if not words:
        return None
    if session.get_bind().dialect.name == "sqlite":
        fts_query = " AND ".join(f'"{w}"*' for w in words)
        ids: Select[tuple[Any]] = (
            select(literal_column("rowid"))
            .select_from(text("message_fts"))
            .where(text("message_fts MATCH :fts_query").bindparams(fts_query=fts_query))
        )
        return col(Message.id).in_(ids)
    vector = func.crm_search_vector(
        col(Message.subject),
        col(Message.from_email),
        col(Message.from_name),
        col(Message.to_addrs),
        col(Message.cc_addrs),
        col(Message.text_body),
    )
    # The index went through unaccent (which also maps ß to ss): so does the query.
    tsquery = func.to_tsquery("simple", func.lower(func.crm_unaccent(" & ".join(f"{w}:*" for w in words))))
    # As a set of ids from the GIN index (one bitmap scan), never as a per-row test: evaluated per
    # message, the vector would be rebuilt from each message's text.
    matching = select(col(Message.id)).where(vector.op("@@")(tsquery))
    return col(Message.id).in_(matching)
