"""The command modules are adapters: they parse, call the domain and print. The database
is the domain's: no command module but `db`'s imports the store or SQLAlchemy, or runs
a query itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nurture.cli

CLI = Path(nurture.cli.__file__).parent
#: `nurture db upgrade` and `init` manage the schema itself.
STORE_ALLOWED = {"database.py"}
QUERY_CALLS = {"execute", "scalar", "scalars", "select", "get", "add", "flush"}


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_command_module_leaves_the_database_to_the_domain(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if path.name not in STORE_ALLOWED:
        reaching = {m for m in imported(tree) if m.split(".")[0] == "sqlalchemy"
                    or m.startswith("nurture.store")}  # fmt: skip
        assert not reaching, f"{path.name} imports {sorted(reaching)}"
    sessions = [
        node.lineno for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "session"
        and node.func.attr in QUERY_CALLS
    ]  # fmt: skip
    assert not sessions, f"{path.name} queries the database itself at lines {sessions}"
