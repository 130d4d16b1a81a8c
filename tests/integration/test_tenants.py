"""fleet tenants list / add / remove against real schemas, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from tests.conftest import DatabaseFactory, Project, ddl_count, schemas, script, version

pytestmark = pytest.mark.slow


def _toml(project: Project) -> Path:
    return project.root / "fleet.toml"


def test_add_records_creates_and_migrates_and_is_idempotent(example: Project) -> None:
    assert example.fleet("migrate").returncode == 0
    result = example.fleet("tenants", "add", "newco", "acme_eu", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["recorded"] == {"newco": "fleet.toml", "acme_eu": "fleet.toml"}
    assert payload["migration"]["summary"]["migrated"] == 4
    assert 'tenants = ["default", "toshiba", "iopex", "newco", "acme_eu"]' in _toml(
        example).read_text()
    assert version(example.db_url, "auth_newco") == ["a15f8c0e3d96"]
    assert version(example.db_url, "workflow_acme_eu") == ["b25b8d3f6a85"]
    # The single-schema service is not touched by adding a tenant.
    before = ddl_count(example.db_url)
    again = example.fleet("tenants", "add", "newco", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["recorded"] == {"newco": "already configured"}
    assert ddl_count(example.db_url) == before
    status = example.fleet("status")
    assert status.returncode == 0, status.stdout


def test_bad_names_change_nothing(example: Project) -> None:
    text = _toml(example).read_text()
    for bad in ("Bad-Name", "x" * 70, "a;drop"):
        result = example.fleet("tenants", "add", "fine", bad)
        assert result.returncode == 2, result.stdout
    assert _toml(example).read_text() == text
    assert not schemas(example.db_url, "auth_fine")
    # A name whose schema would be too long is the argument's fault, not the file's (it
    # said "fleet.toml: key 'tenants add': ...").
    result = example.fleet("tenants", "add", "y" * 60)
    assert result.returncode == 2 and "longer than 63 bytes" in result.stderr
    assert "fleet.toml" not in result.stderr and "key '" not in result.stderr


def test_list_shows_present_missing_and_orphans(example: Project) -> None:
    assert example.fleet("migrate", env={"TENANTS": "default toshiba gone"}).returncode == 0
    result = example.fleet("tenants", "list", "--json")
    assert result.returncode == 0
    rows = {(r["tenant"], r["service"]): r["presence"] for r in json.loads(result.stdout)[
        "tenants"]}
    assert rows[("default", "auth")] == "present"
    assert rows[("iopex", "workflow")] == "missing"
    assert rows[("gone", "auth")] == "orphan"
    assert ("default", "ingestion") not in rows  # single-schema services have no tenants
    text = example.fleet("tenants", "list")
    assert "orphan schemas of: gone" in text.stdout


def test_remove_drops_only_that_tenant_after_confirmation(example: Project,
                                                          tmp_path: Path) -> None:
    assert example.fleet("tenants", "add", "acme", "acme_eu").returncode == 0
    declined = example.fleet("tenants", "remove", "acme", input="acme_eu\n")
    assert declined.returncode == 1
    assert schemas(example.db_url, "auth_acme%") == {"auth_acme", "auth_acme_eu"}
    dump = tmp_path / "acme.sql"
    result = example.fleet("tenants", "remove", "acme", "--dump", str(dump), input="acme\n")
    assert result.returncode == 0, result.stderr
    assert schemas(example.db_url, "%acme%") == {"auth_acme_eu", "workflow_acme_eu"}
    assert "acme_eu" in _toml(example).read_text()
    assert '"acme"' not in _toml(example).read_text()
    # The dump restores the tenant's schemas as they were.
    restored = subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump),
                               example.db_url], capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    assert version(example.db_url, "auth_acme") == ["a15f8c0e3d96"]


def test_remove_an_orphan_and_an_unknown_tenant(example: Project) -> None:
    assert example.fleet("migrate", env={"TENANTS": "default gone"}).returncode == 0
    result = example.fleet("tenants", "remove", "gone", "--yes")
    assert result.returncode == 0, result.stderr
    assert not schemas(example.db_url, "%gone")
    # Removing what is not there does nothing, as adding what is there does: an offboarding
    # script run twice must not fail the second time (it exited 2).
    again = example.fleet("tenants", "remove", "gone", "--yes")
    assert again.returncode == 0, again.stderr
    assert "nothing to remove" in again.stdout
    unknown = example.fleet("tenants", "remove", "never", "--json")  # no terminal, no --yes
    assert unknown.returncode == 0, unknown.stderr
    assert json.loads(unknown.stdout) == {"tenant": "never", "dropped": [], "dumps": [],
                                          "forgotten": None}


def test_a_tenant_on_its_own_database(example: Project, databases: DatabaseFactory) -> None:
    """[tenant_attributes.toshiba] database = ...: toshiba's schemas live on a second database
    (standing in for a second server); the others stay on the shared one."""
    second = databases.create("fleet_toshiba")
    toml = _toml(example)
    toml.write_text(toml.read_text() + '\n[tenant_attributes.toshiba]\n'
                    'database = "${TOSHIBA_DATABASE_URI:-}"\n')
    example.env["TOSHIBA_DATABASE_URI"] = second
    result = example.fleet("migrate", "--json")
    assert result.returncode == 0, result.stderr
    assert version(second, "auth_toshiba") == ["a15f8c0e3d96"]
    assert not schemas(example.db_url, "%toshiba")
    assert version(example.db_url, "auth_default") == ["a15f8c0e3d96"]
    databases_seen = {t["database"] for t in json.loads(result.stdout)["targets"]}
    assert len(databases_seen) == 3  # shared, ingestion, toshiba's
    listed = json.loads(example.fleet("tenants", "list", "--json").stdout)["tenants"]
    assert {r["database"] for r in listed if r["tenant"] == "toshiba"} == {
        second.replace("postgres@", "postgres@")}
    # Adding a tenant with its own database puts it there too.
    third = databases.create("fleet_newco")
    toml.write_text(toml.read_text() + '\n[tenant_attributes.newco]\n'
                    f'database = "{third}"\n')
    assert example.fleet("tenants", "add", "newco").returncode == 0
    assert version(third, "workflow_newco") == ["b25b8d3f6a85"]
    with psycopg.connect(example.db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%newco'"
                            ).fetchone() == (0,)


def test_one_unreachable_server_fails_only_its_targets(example: Project,
                                                       databases: DatabaseFactory) -> None:
    """toshiba's server is down: its targets fail with the reason, every other target is
    migrated, status reports per database, and the rerun completes once it is back."""
    toml = _toml(example)
    toml.write_text(toml.read_text() + '\n[tenant_attributes.toshiba]\n'
                    'database = "${TOSHIBA_DATABASE_URI:-}"\n')
    down = {"TOSHIBA_DATABASE_URI": "postgresql://postgres:pw-x9@127.0.0.1:1/toshiba"}
    result = example.fleet("migrate", "--json", env=down)
    assert result.returncode == 1, result.stderr
    payload = json.loads(result.stdout)
    failed = {t["schema"] for t in payload["targets"] if t["outcome"] == "failed"}
    assert failed == {"auth_toshiba", "workflow_toshiba"}
    assert all("cannot connect" in t["error"] for t in payload["targets"]
               if t["outcome"] == "failed")
    assert payload["summary"]["migrated"] == 5
    assert len(payload["databases"]) == 3
    assert "pw-x9" not in result.stdout + result.stderr
    status = example.fleet("status", env=down)
    assert status.returncode == 3
    assert "postgres:***@127.0.0.1:1/toshiba: 2 target(s): 2 unreachable" in status.stdout
    status_json = json.loads(example.fleet("status", "--json", env=down).stdout)
    assert status_json["summary"]["unreachable"] == 2
    assert {t["state"] for t in payload["targets"] if t["outcome"] == "failed"} == {
        "unreachable"}
    assert "cannot connect" in status.stderr
    second = databases.create("fleet_toshiba_up")
    rerun = example.fleet("migrate", "--json", env={"TOSHIBA_DATABASE_URI": second})
    assert rerun.returncode == 0
    assert json.loads(rerun.stdout)["summary"]["migrated"] == 2


def test_concurrent_adds_all_land_in_the_file(example: Project) -> None:
    """Six 'fleet tenants add' at once, three times: every name is recorded, none lost."""
    names = []
    for trial in range(3):
        batch = [f"t{trial}_{i}" for i in range(6)]
        names += batch
        env = {**{k: v for k, v in os.environ.items() if k != "TENANTS"}, **example.env}
        runners = [subprocess.Popen([script("fleet"), "tenants", "add", n, "--no-migrate"],
                                    cwd=example.root, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for n in batch]
        for runner in runners:
            _out, err = runner.communicate(timeout=120)
            assert runner.returncode == 0, err
    text = _toml(example).read_text()
    missing = [n for n in names if f'"{n}"' not in text]
    assert missing == []


def test_remove_with_tenants_set_forgets_the_recorded_tenant(example: Project) -> None:
    # With TENANTS naming others, a tenant recorded in fleet.toml looked like an orphan to
    # 'tenants remove': its schemas were dropped and it stayed in fleet.toml, so the next
    # 'fleet migrate' made it again, empty ("never a configured tenant whose data is gone").
    assert example.fleet("migrate").returncode == 0
    assert "toshiba" in _toml(example).read_text()
    result = example.fleet("tenants", "remove", "toshiba", "--yes",
                           env={"TENANTS": "default iopex"})
    assert result.returncode == 0, result.stderr
    assert "toshiba" not in _toml(example).read_text()
    assert not schemas(example.db_url, "%toshiba")
    assert "TENANTS" in result.stderr  # as 'tenants add' says: this shell's list still rules
    assert '"toshiba"' not in example.fleet("status", "--json").stdout


def test_add_refused_before_anything_runs_records_nothing(example: Project) -> None:
    # 'tenants add' recorded the tenant in fleet.toml, then refused to migrate (exit 2,
    # "nothing was executed"): an applied revision edited since, or no database reachable.
    assert example.fleet("migrate").returncode == 0
    before = _toml(example).read_text()
    revision = next((example.root / "python_apps" / "auth_api").rglob("a15f8c0e3d96*.py"))
    revision.write_text(revision.read_text() + "\n# edited after it was applied\n")
    changed = example.fleet("tenants", "add", "newco")
    assert changed.returncode == 2, changed.stderr
    assert "changed after it was applied" in changed.stderr
    assert _toml(example).read_text() == before
    down = example.fleet("tenants", "add", "newco",
                         env={"DATABASE_URI": "postgresql://postgres@127.0.0.1:1/nowhere"})
    assert down.returncode == 2, down.stderr
    assert _toml(example).read_text() == before
    assert not schemas(example.db_url, "%newco")
