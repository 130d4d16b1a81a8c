"""The layering rules of docs/architecture.md, checked on the source itself.

* ``model/`` imports nothing of the project but ``model/`` and ``exceptions``;
* ``exceptions`` imports nothing of the project;
* only ``alembic_bridge/`` imports ``alembic``;
* only ``cli/`` imports ``click``;
* only ``reporting/`` (and ``cli/``, which flushes before exec) touches stdout.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "alembic_fleet"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts)


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _top(name: str) -> str:
    return name.partition(".")[0]


def test_the_rules_see_every_module() -> None:
    assert len(MODULES) > 40
    assert any(_relative(p) == "cli/__init__.py" for p in MODULES)


@pytest.mark.parametrize("path", [p for p in MODULES if _relative(p).startswith("model/")],
                         ids=_relative)
def test_model_is_pure(path: Path) -> None:
    own = {n for n in _imports(path) if _top(n) == "alembic_fleet"}
    allowed = {n for n in own if n.startswith("alembic_fleet.model") or
               n == "alembic_fleet.exceptions"}
    assert own == allowed, f"{_relative(path)} imports {sorted(own - allowed)}"
    outside = {_top(n) for n in _imports(path)} & {"sqlalchemy", "alembic", "psycopg",
                                                     "click", "rich"}
    assert not outside, f"{_relative(path)} imports {sorted(outside)}"


def test_exceptions_import_nothing_of_the_project() -> None:
    assert not {n for n in _imports(PACKAGE / "exceptions.py") if _top(n) == "alembic_fleet"}


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_only_the_bridge_imports_alembic(path: Path) -> None:
    if _relative(path).startswith("alembic_bridge/"):
        return
    assert "alembic" not in {_top(n) for n in _imports(path)}, _relative(path)


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_only_the_cli_imports_click(path: Path) -> None:
    if _relative(path).startswith("cli/"):
        return
    assert "click" not in {_top(n) for n in _imports(path)}, _relative(path)


def _writes_stdout(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Attribute) and node.attr == "stdout"
                and isinstance(node.value, ast.Name) and node.value.id == "sys"):
            lines.append(node.lineno)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "print"
                and not any(k.arg == "file" for k in node.keywords)):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", MODULES, ids=_relative)
def test_only_reporting_writes_to_stdout(path: Path) -> None:
    if _relative(path).startswith(("reporting/", "cli/")):
        return
    if _relative(path) == "entry.py":  # the console script's one line, before reporting is
        assert len(_writes_stdout(path)) == 1  # imported: a Ctrl-C during the import
        return
    assert _writes_stdout(path) == [], _relative(path)
