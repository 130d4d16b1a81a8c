"""Every command has --help and is documented in the README."""

from __future__ import annotations

import re
import tomllib

import click
import pytest
import yaml

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


def _table_rows(path: tuple[str, ...]) -> str:
    """The README command table's rows for ``fleet PATH``: the row whose first cell names it
    (a subcommand may follow its group's name in the same cell: `fleet db url` / `db stop`),
    with the continuation rows (a first cell of options only) after it."""
    table = (REPO / "README.md").read_text().split("| command | what it does |", 1)[1]
    rows, taken, mine = table.split("\n\n", 1)[0].splitlines()[2:], False, []
    for row in rows:
        first = row.split("|")[1]
        names = (f"`fleet {' '.join(path)}" in first
                 or (len(path) == 2 and f"`fleet {path[0]} " in first
                     and f"`{' '.join(path)}" in first))
        taken = names or (taken and first.strip().startswith("&nbsp;"))
        if taken:
            mine.append(row)
    return "\n".join(mine)


@pytest.mark.parametrize("path", [p for p in COMMANDS
                                  if not isinstance(cli.get_command(None, p[0]), click.Group)
                                  or len(p) == 2], ids=" ".join)
def test_every_option_is_in_the_readme_table(path: tuple[str, ...]) -> None:
    # An option added to a command and forgotten in the table (check --tenant, reset
    # --confirm, ...) fails here. --json is said once, above the table.
    command = cli
    for name in path:
        command = command.commands[name]
    rows = _table_rows(path)
    assert rows, f"no row for fleet {' '.join(path)} in the README's command table"
    missing = [param.opts[0] for param in command.params
               if isinstance(param, click.Option) and "--help" not in param.opts
               and "--json" not in param.opts
               and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", rows)
                           for o in param.opts)]
    assert missing == [], rows


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
    # Loaded up front (with the collector off), before the command found no configuration;
    # Rich only for a terminal (here the output is piped: plain lines, no Rich).
    assert {"sqlalchemy", "alembic_fleet.ledger"} <= _imported(result.stderr)
    assert "rich" not in _imported(result.stderr)


def _install_commands() -> list[str]:
    """Every ``pip install ...`` command (up to a backtick, a comment or the next command)
    and every pre-commit ``additional_dependencies`` in the docs, the examples and the hooks."""
    files = [REPO / "README.md", REPO / ".pre-commit-hooks.yaml", *REPO.glob("docs/*.md"),
             *REPO.glob("examples/**/*.md"), *REPO.glob("examples/**/.github/workflows/*.yml")]
    found = []
    for path in files:
        for line in path.read_text().splitlines():
            commands = re.findall(r"pip install[^`#;&|\n]*", line)
            if "additional_dependencies" in line:
                commands.append(line.strip())
            found += [f"{path.relative_to(REPO)}: {command}" for command in commands]
    return found


def test_install_instructions_do_not_expect_alembic_fleet_on_pypi() -> None:
    # alembic-fleet is not on PyPI: 'pip install "alembic-fleet[embedded]"' installs nothing.
    # Every instruction installs it from a path, a Git URL or a wheel ('NAME @ URL').
    commands = _install_commands()
    assert any("alembic-fleet[embedded] @ git+https://" in command for command in commands)
    by_name = re.compile(r"(?<![\w/.-])alembic-fleet(\[[\w,]+\])?(?!\S* @ )(?![\w/.-])")
    assert [command for command in commands if by_name.search(command)] == []


def test_the_full_pre_commit_hook_adds_the_embedded_extra() -> None:
    # pre-commit installs the hook's repository (alembic-fleet itself); an extra's packages
    # are listed by name, as pyproject.toml has them.
    hooks = {h["id"]: h for h in yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert hooks["fleet-check-full"]["additional_dependencies"] == project[
        "optional-dependencies"]["embedded"]
