"""Full-text search over subject, participants and bodies, accents and case folded

SQLite: an FTS5 index (unicode61, diacritics removed) over a view of `message`, kept current by
triggers, so every writer (the sync's store, imports) is covered without knowing about it.
PostgreSQL: a GIN index on an immutable expression (`crm_search_vector`) built with `unaccent`;
queries use the same expression, so the planner uses the index.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Addresses and names of a JSON list of {"email", "name"} (SQLite JSON1).
_SQLITE_PEOPLE = "(SELECT group_concat(json_extract(value, '$.email') || ' ' || json_extract(value, '$.name'), ' ') FROM json_each({col}))"


def _sqlite_participants(row: str) -> str:
    parts = [
        f"{row}.from_email",
        f"{row}.from_name",
        _SQLITE_PEOPLE.format(col=f"{row}.to_addrs"),
        _SQLITE_PEOPLE.format(col=f"{row}.cc_addrs"),
    ]
    return " || ' ' || ".join(f"coalesce({p}, '')" for p in parts)


def _sqlite_values(row: str) -> str:
    return f"{row}.id, {row}.subject, {_sqlite_participants(row)}, {row}.text_body"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIEW message_search_src AS SELECT m.id AS id, m.subject AS subject, "
            f"{_sqlite_participants('m')} AS participants, m.text_body AS text_body FROM message m"
        )
        op.execute(
            "CREATE VIRTUAL TABLE message_fts USING fts5(subject, participants, text_body, "
            "content='message_search_src', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
        )
        columns = "rowid, subject, participants, text_body"
        op.execute(
            "CREATE TRIGGER message_fts_insert AFTER INSERT ON message BEGIN "
            f"INSERT INTO message_fts({columns}) VALUES ({_sqlite_values('new')}); END"
        )
        op.execute(
            "CREATE TRIGGER message_fts_delete AFTER DELETE ON message BEGIN "
            f"INSERT INTO message_fts(message_fts, {columns}) VALUES ('delete', {_sqlite_values('old')}); END"
        )
        op.execute(
            "CREATE TRIGGER message_fts_update AFTER UPDATE OF subject, from_email, from_name, to_addrs, "
            "cc_addrs, text_body ON message BEGIN "
            f"INSERT INTO message_fts(message_fts, {columns}) VALUES ('delete', {_sqlite_values('old')}); "
            f"INSERT INTO message_fts({columns}) VALUES ({_sqlite_values('new')}); END"
        )
        # FTS5's 'rebuild' cannot read a view: index the existing mail by hand.
        op.execute(
            f"INSERT INTO message_fts({columns}) SELECT id, subject, participants, text_body FROM message_search_src"
        )
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    # unaccent() is only STABLE (its dictionary could change); pinning the dictionary makes the
    # wrapper safe to declare IMMUTABLE, which an index expression requires.
    op.execute(
        "CREATE OR REPLACE FUNCTION crm_unaccent(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        "STRICT AS $$ SELECT public.unaccent('public.unaccent'::regdictionary, $1) $$"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION crm_people(json) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
        "SELECT coalesce(string_agg(coalesce(e->>'email', '') || ' ' || coalesce(e->>'name', ''), ' '), '') "
        "FROM json_array_elements(coalesce($1, '[]'::json)) AS e $$"
    )
    # Addresses are indexed whole and split at @ and dots, so "globex" finds ann@globex.example.
    op.execute(
        "CREATE OR REPLACE FUNCTION crm_search_vector(subject text, from_email text, from_name text, "
        "to_addrs json, cc_addrs json, text_body text) RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
        "SELECT setweight(to_tsvector('simple', lower(crm_unaccent(coalesce(subject, '')))), 'A') || "
        "setweight(to_tsvector('simple', lower(crm_unaccent(people || ' ' || translate(people, '@.', '  ')))), 'B') || "
        "setweight(to_tsvector('simple', lower(crm_unaccent(left(coalesce(text_body, ''), 200000)))), 'C') "
        "FROM (SELECT coalesce(from_email, '') || ' ' || coalesce(from_name, '') || ' ' || crm_people(to_addrs) "
        "|| ' ' || crm_people(cc_addrs) AS people) AS p $$"
    )
    op.execute(
        "CREATE INDEX ix_message_search ON message USING GIN "
        "(crm_search_vector(subject, from_email, from_name, to_addrs, cc_addrs, text_body))"
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for trigger in ("message_fts_update", "message_fts_delete", "message_fts_insert"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS message_fts")
        op.execute("DROP VIEW IF EXISTS message_search_src")
        return
    op.execute("DROP INDEX IF EXISTS ix_message_search")
    op.execute("DROP FUNCTION IF EXISTS crm_search_vector(text, text, text, json, json, text)")
    op.execute("DROP FUNCTION IF EXISTS crm_people(json)")
    op.execute("DROP FUNCTION IF EXISTS crm_unaccent(text)")
