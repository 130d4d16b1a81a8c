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
