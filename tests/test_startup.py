"""Start-up: `nurture --help` and `validate` load only what they use."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import nurture.cli
from nurture.cli import COMMANDS, cli

HEAVY = ("dramatiq", "alembic", "flask", "werkzeug", "gunicorn", "sqlalchemy", "redis",
         "psycopg", "limits", "email_validator")  # fmt: skip

PROBE = """
import json, sys
from nurture.cli import cli
try:
    cli(sys.argv[1:], prog_name="nurture")
except SystemExit as e:
    code = e.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(HEAVY)))
print("\\nLOADED " + json.dumps({"code": code, "heavy": heavy}))
"""


def loaded_by(*args: str, cwd: Path | None = None) -> dict:
    """Run `nurture ARGS` in a fresh interpreter; which heavy packages did it import?"""
    run = subprocess.run([sys.executable, "-c", PROBE.replace("HEAVY", repr(json.dumps(HEAVY))),
                          *args], capture_output=True, text=True, cwd=cwd, timeout=60)  # fmt: skip
    line = next(x for x in run.stdout.splitlines() if x.startswith("LOADED "))
    return json.loads(line.removeprefix("LOADED "))


def test_help_imports_no_command_module_nor_heavy_library():
    found = loaded_by("--help")
    assert found == {"code": 0, "heavy": []}


def test_validate_needs_no_database_queue_or_web_library(workspace):
    found = loaded_by("--workspace", str(workspace), "validate")
    assert found == {"code": 0, "heavy": []}


def _every_command_module() -> None:
    for info in pkgutil.iter_modules(nurture.cli.__path__):
        importlib.import_module(f"nurture.cli.{info.name}")


def test_the_lazy_map_names_every_command_with_its_own_short_help():
    """`--help` lists commands from nurture.cli.COMMANDS without importing them: the map
    must know every command, its module and its short help."""
    _every_command_module()
    assert sorted(cli.commands) == sorted(COMMANDS)
    for name, cmd in cli.commands.items():
        module, short = COMMANDS[name]
        defined_in = (cmd.callback.__module__ if cmd.callback else "").removeprefix("nurture.cli.")
        assert defined_in == module, name
        mapped = click.Command(None, help=short)
        for width in (30, 60, 200):
            assert mapped.get_short_help_str(width) == cmd.get_short_help_str(width), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_each_command(runner, name):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert any(line.split()[:1] == [name] for line in result.output.splitlines()), name
