"""Every command has --help and is documented in the README."""

from __future__ import annotations

import click
import pytest

from alembic_fleet.cli import cli, main
from tests.conftest import REPO, run


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in group.commands.items():
        path = (*prefix, name)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(cli)


def test_the_expected_commands_exist() -> None:
    assert {("migrate",), ("status",), ("history",), ("heads",), ("downgrade",), ("init",),
            ("db", "url"), ("db", "start"), ("db", "stop"), ("db", "psql"), ("reset",)} <= set(
        COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_and_readme(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    # In process: the entry point is the same for every command (test_version runs the
    # installed script), and an interpreter start per command cost half a second each.
    assert main([*path, "--help"]) == 0
    assert "Usage: fleet " + " ".join(path) in capsys.readouterr().out
    assert f"fleet {' '.join(path)}" in (REPO / "README.md").read_text() or (
        len(path) == 2 and f"{path[1]}" in (REPO / "README.md").read_text())


def test_version(tmp_path) -> None:
    result = run(["fleet", "--version"], cwd=tmp_path, env={})
    assert result.returncode == 0 and "alembic-fleet" in result.stdout


def _imported(stderr: str) -> set[str]:
    """The modules an interpreter run with PYTHONPROFILEIMPORTTIME=1 imported, with their
    packages (a module loaded by importlib.import_module is not logged, its imports are)."""
    names = {line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines()
             if line.startswith("import time:")}
    return names | {name.rsplit(".", n)[0] for name in names for n in range(name.count("."))}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["tenants", "add", "--help"],
                                  ["migrate", "--help"], ["-C", ".", "status", "-h"]],
                         ids=" ".join)
def test_help_and_version_start_without_the_database_stack(tmp_path, args) -> None:
    # --help, --version and shell completion run on every Tab press: they load neither
    # SQLAlchemy nor Rich nor the ledger (two thirds of a command's start-up).
    result = run(["fleet", *args], cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    imported = _imported(result.stderr)
    assert "click" in imported  # the import log was read
    assert not {"sqlalchemy", "rich", "psycopg", "alembic_fleet.ledger"} & imported


def test_a_command_still_loads_what_it_needs_first(tmp_path) -> None:
    result = run(["fleet", "heads"], cwd=tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 2 and "no fleet.toml" in result.stderr, result.stderr[-2000:]
    # Loaded up front (with the collector off), before the command found no configuration.
    assert {"sqlalchemy", "rich", "alembic_fleet.ledger"} <= _imported(result.stderr)
