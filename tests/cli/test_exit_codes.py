"""What each command's help and the README say about exit codes is what the command does
(installed ``fleet``)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from alembic_fleet.cli import main
from alembic_fleet.exit_codes import ExitCode
from tests.cli.test_help_and_docs import COMMANDS
from tests.conftest import REPO, Project

UNREACHABLE = "postgresql://fleet@127.0.0.1:1/nowhere"  # port 1: refused at once


def _exit_codes(help_text: str) -> dict[int, str]:
    """The help's 'Exit codes:' paragraph as {code: meaning}."""
    paragraph = " ".join(help_text.split("Exit codes:", 1)[1].split("\n\n", 1)[0].split())
    return {int(code): meaning.strip() for code, meaning in
            re.findall(r"(?:^|; )(\d+) ([^;]*)", paragraph)}


def _help(*command: str) -> str:
    """``fleet COMMAND --help``, in process (as tests/cli/test_help_and_docs.py reads it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*command, "--help"]) == 0
    return out.getvalue()


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_names_only_codes_fleet_has(path: tuple[str, ...]) -> None:
    text = _help(*path)
    if "Exit codes:" in text:
        assert set(_exit_codes(text)) <= {int(code) for code in ExitCode}, text


def test_status_with_one_database_unreachable_exits_3(example: Project) -> None:
    result = example.fleet("status", env={"INGESTION_DATABASE_URL": UNREACHABLE})
    assert result.returncode == ExitCode.NOT_UP_TO_DATE, result.stdout + result.stderr
    assert "unreachable" in result.stdout
    codes = _exit_codes(_help("status"))
    assert "unreachable" in codes[3] and 2 in codes
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 3 |"))
    assert "unreachable" in row and "failed" in row


def test_status_with_no_database_reachable_exits_2(example: Project) -> None:
    result = example.fleet("status", env={"DATABASE_URI": UNREACHABLE,
                                          "INGESTION_DATABASE_URL": UNREACHABLE})
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert "database" in _exit_codes(_help("status"))[2]


def test_downgrade_without_a_terminal_needs_yes_exit_2(example: Project) -> None:
    result = example.fleet("downgrade", "auth", "--tenant", "default", "-1", input="")
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert "pass --yes" in result.stderr
    assert "--yes" in _exit_codes(_help("downgrade"))[2]


def test_tenants_remove_without_a_terminal_needs_yes_exit_2(example: Project) -> None:
    result = example.fleet("tenants", "remove", "toshiba", input="")
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert "--yes" in _exit_codes(_help("tenants", "remove"))[2]


def test_reset_force_without_a_terminal_needs_confirm_exit_2(example: Project) -> None:
    result = example.fleet("reset", "--force", "--keep-public", input="")
    assert result.returncode == ExitCode.USAGE, result.stdout + result.stderr
    assert "--confirm" in result.stderr
    codes = _exit_codes(_help("reset"))
    assert "--confirm" in codes[2] and 1 in codes
