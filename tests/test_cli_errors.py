"""The one CLI error handler (`crm_inbox.cli.errors`): any `DomainError` below the root group,
however deep the sub-command, becomes `error: <message>` + the CLI's hint on stderr and exit 1
(with `--json`, also the error object on stdout); never a traceback."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from typer.testing import CliRunner

from core.errors import Conflict, QuotaExceeded, not_found
from crm_inbox.cli.errors import HandledGroup, hint_for

app = typer.Typer(cls=HandledGroup)
group = typer.Typer()
app.add_typer(group, name="deep")


@group.command("missing")
def missing(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    raise not_found("account", 7)


@group.command("quota")
def quota() -> None:
    raise QuotaExceeded(
        "quota_exceeded", "The plan allows 1 active mail account(s) and 1 are in use.", quota=1, used=1
    )


@app.command("bug")
def bug() -> None:
    raise RuntimeError("a real bug still shows")


def test_domain_errors_become_messages_and_exit_1() -> None:
    result = CliRunner().invoke(app, ["deep", "missing"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.strip() == "error: No account with id 7."
    quota_result = CliRunner().invoke(app, ["deep", "quota"])
    assert quota_result.exit_code == 1
    assert (
        "hint: deactivate an account" in quota_result.stderr
        and "crm-inbox tenant quota" in quota_result.stderr
    )


def test_json_flag_adds_the_error_object() -> None:
    result = CliRunner().invoke(app, ["deep", "missing", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "error": {
            "code": "account_not_found",
            "kind": "not_found",
            "message": "No account with id 7.",
            "fields": {"what": "account", "id": 7},
        }
    }


def test_other_exceptions_are_not_swallowed() -> None:
    result = CliRunner().invoke(app, ["bug"])
    assert isinstance(result.exception, RuntimeError)


def test_hints_fill_in_fields_and_skip_when_one_is_missing() -> None:
    error = Conflict("account_in_use", "In use.", account_id=4)
    assert hint_for(error) == "deactivate it instead: crm-inbox account deactivate 4"
    assert hint_for(Conflict("account_in_use", "In use.")) is None
    assert hint_for(Conflict("something_else", "Else.")) is None
