"""The layout stays as documented: docs/architecture.md names only modules that exist and
every top-level folder and module, and no test module imports another."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "architecture.md"
TESTS = Path(__file__).parent

#: `nurture/...` paths as the doc writes them: folders end in `/`, modules in `.py`.
PATH = re.compile(r"\bnurture/[\w/]*(?:\.py)?")


def test_every_module_the_architecture_doc_names_exists():
    named = sorted(set(PATH.findall(DOC.read_text(encoding="utf-8"))))
    assert named, "docs/architecture.md names no module"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert missing == []


def test_the_architecture_doc_names_every_top_level_folder_and_module():
    named = set(PATH.findall(DOC.read_text(encoding="utf-8")))
    package = ROOT / "nurture"
    top = {f"nurture/{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()}
    top |= {f"nurture/{p.name}" for p in package.glob("*.py") if not p.name.startswith("__")}
    assert sorted(top - named) == []


def _imported(path: Path) -> set[str]:
    """Every module an import statement in `path` names, relative ones made absolute."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "tests" if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            found |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return found


def test_no_test_module_imports_another():
    """Shared helpers live in tests/helpers/ and fixtures in tests/conftest.py: a test
    module that imports another runs that module's tests' set-up and hides what is shared."""
    test_modules = {f"tests.{p.stem}" for p in TESTS.glob("test_*.py")}
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported(path) & test_modules)
        for path in sorted(TESTS.rglob("*.py"))
        if _imported(path) & test_modules
    }
    assert offenders == {}


#: Longest module and longest function, in lines (migrations aside): past these a module
#: holds more than one idea, and a function more than one step.
MODULE_LINES, FUNCTION_LINES = 400, 60


def test_modules_and_functions_stay_small():
    too_long: list[str] = []
    for path in sorted((ROOT / "nurture").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        source = path.read_text(encoding="utf-8")
        shown = str(path.relative_to(ROOT))
        if len(source.splitlines()) >= MODULE_LINES:
            too_long.append(f"{shown}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > FUNCTION_LINES:
                    too_long.append(f"{shown}:{node.lineno}: {node.name}() is {lines} lines")
    assert too_long == []
