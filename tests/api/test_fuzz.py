"""Property-based fuzzing of the API from its own OpenAPI schema (schemathesis): whatever a
client sends within or around the schema, the answer is never a server error (5xx).

Excluded: the event stream (it never ends, by design) and the two account routes that log in to
a mail server named in the request (they would try random hosts; their validation is tested in
tests/crm/test_mailboxes.py and the sweep).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine

from core.db import session_scope
from crm import auth
from inbox_api.app import create_app
from tests.crm.world import World, build_world

app = create_app()
schema = (
    schemathesis.openapi.from_asgi("/openapi.json", app)
    .exclude(path="/api/events")
    .exclude(method="POST", path="/api/accounts")
    .exclude(method="PATCH", path="/api/accounts/{account_id}")
)


@pytest.fixture
def admin_headers(sqlite_db: Engine) -> Iterator[dict[str, str]]:
    world: World = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        created = auth.create_token(session=s, caller=world.caller("admin"), user_id=world.users["admin"])
    yield {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_server_errors(case: schemathesis.Case, admin_headers: dict[str, str]) -> None:
    response = case.call(headers=admin_headers)
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
