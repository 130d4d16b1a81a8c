"""Small truths at the interface: what is printed says what happened, no more."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Project

pytestmark = pytest.mark.slow


def test_a_piped_noop_run_prints_a_summary_not_a_line_per_target(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    again = example.fleet("migrate")
    assert again.returncode == 0
    assert again.stdout.strip().splitlines() == [
        "nothing to do: all 7 target(s) skipped (already at the wanted revision)"]


def test_orphans_are_listed_but_not_counted_as_targets(example: Project) -> None:
    assert example.fleet("migrate", env={"TENANTS": "default toshiba iopex gone"}).returncode == 0
    status = example.fleet("status", "--json")
    assert status.returncode == 0
    payload = json.loads(status.stdout)
    assert payload["summary"]["targets"] == 7 and payload["summary"]["orphan"] == 2
    assert sum(1 for t in payload["targets"] if t["state"] == "orphan") == 2


def test_log_of_an_unknown_run_is_an_error(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    result = example.fleet("log", "--run", "zzz")
    assert result.returncode == 2 and "no run 'zzz'" in result.stderr
