"""`crm-inbox` imports only the command modules its command line names (`main()`), from the
table `crm_inbox.cli.COMMAND_MODULES`; these tests keep that table true to what each module
registers, and check that `sync` starts without the others."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import typer

import crm_inbox.cli as cli

ROOT = Path(__file__).resolve().parent.parent


def _defining_modules(item: object) -> set[str]:
    """The table's module names that define this Typer group (by identity)."""
    found = set()
    for name in cli._ALL_MODULES:
        module = importlib.import_module(f"crm_inbox.cli.{name}")
        if any(value is item for value in vars(module).values()):
            found.add(name)
    return found


def test_the_table_names_every_command_and_where_it_comes_from() -> None:
    app = cli.app  # every module loaded
    commands = {c.name or c.callback.__name__: c for c in app.registered_commands if c.callback}
    groups = {g.name: g for g in app.registered_groups if g.name}
    assert set(cli.COMMAND_MODULES) == set(commands) | set(groups)
    for name, info in commands.items():
        module = info.callback.__module__.rpartition(".")[2] if info.callback else ""
        assert module in cli.COMMAND_MODULES[name] or (name == "init" and module == "cli"), name
    for name, group in groups.items():
        assert isinstance(group.typer_instance, typer.Typer)
        assert _defining_modules(group.typer_instance) & set(cli.COMMAND_MODULES[name]), name
        # ... and every module that adds a command to the group is listed for it.
        for command in group.typer_instance.registered_commands:
            assert command.callback is not None
            module = command.callback.__module__.rpartition(".")[2]
            assert module in cli.COMMAND_MODULES[name], (name, command.name, module)


def test_unknown_commands_and_help_load_everything() -> None:
    assert cli.modules_for([]) == cli._ALL_MODULES
    assert cli.modules_for(["--help"]) == cli._ALL_MODULES
    assert cli.modules_for(["-v", "no-such-command"]) == cli._ALL_MODULES
    assert cli.modules_for(["-v", "sync", "--once"]) == ("sync",)


def test_sync_starts_without_the_other_commands() -> None:
    code = (
        "import sys; sys.argv = ['crm-inbox', 'sync', '--help']\n"
        "import crm_inbox.cli as cli\n"
        "try:\n    cli.main()\nexcept SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "heavy = [m for m in ('crm_inbox.cli.records', 'crm_inbox.cli.mail', 'crm_inbox.cli.admin',"
        " 'crm.outbound.compose', 'crm.contact_import') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--once" in done.stdout
