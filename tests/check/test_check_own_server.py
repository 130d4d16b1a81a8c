"""``fleet check --database`` compares a tenant on its own server with that server."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DatabaseFactory, Project, query

pytestmark = pytest.mark.slow


def test_a_tenant_on_its_own_database_is_checked_there(example: Project,
                                                       databases: DatabaseFactory) -> None:
    second = databases.create("fleet_toshiba")
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text() + '\n[tenant_attributes.toshiba]\n'
                    'database = "${TOSHIBA_DATABASE_URI:-}"\n')
    example.env["TOSHIBA_DATABASE_URI"] = second
    assert example.fleet("migrate").returncode == 0
    clean = example.fleet("check", "auth", "--database", "--no-scratch", "--format", "json")
    assert clean.returncode == 0, clean.stdout + clean.stderr  # no false FC402
    query(second, "ALTER TABLE auth_toshiba.users ADD COLUMN by_hand integer")
    drift = example.fleet("check", "auth", "--database", "--no-scratch", "--format", "json")
    assert drift.returncode == 3
    found = {(f["code"], f["schema"]) for f in json.loads(drift.stdout)["findings"]}
    assert ("FC402", "auth_toshiba") in found
    assert not any(code == "FC402" and schema != "auth_toshiba" for code, schema in found)
