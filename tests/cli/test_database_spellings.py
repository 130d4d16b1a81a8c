"""One database named by two URLs that differ only in their spelling (a service on
``postgresql+psycopg2://``, the others on ``postgresql://``): fleet reaches it twice, and
the run must still be one run that says what it did (installed ``fleet``)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import Project, query, version


def test_one_database_named_two_ways_is_one_run_in_its_ledger(example: Project) -> None:
    other = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    assert other != example.db_url
    env = {"INGESTION_DATABASE_URL": other}
    done = example.fleet("migrate", "--json", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert (summary["migrated"], summary["failed"]) == (7, 0)
    assert version(example.db_url, "public")  # the ingestion service's, on the same database
    # One run row, closed, counting every target it migrated through both spellings.
    assert query(example.db_url, "SELECT outcome, migrated, failed FROM fleet.runs") == [
        ("succeeded", 7, 0)]
    assert query(example.db_url, "SELECT count(*) FROM fleet.run_targets") == [(7,)]
    status = example.fleet("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["summary"]["at_head"] == 7
    again = example.fleet("migrate", "--json", env=env)
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["skipped"] == 7
    # fleet log lists the run once, and its targets once.
    log = json.loads(example.fleet("log", "--json", env=env).stdout)
    assert [r["migrated"] for r in log["runs"]] == [7]
    details = example.fleet("log", "--run", log["runs"][0]["run_id"][:8], "--json", env=env)
    assert details.returncode == 0, details.stderr
    assert len(json.loads(details.stdout)["targets"]) == 7


def test_one_schema_of_one_database_named_two_ways_is_refused(example: Project) -> None:
    """Two services in one schema of one database are refused when the configuration says
    so by one URL (the schema namespace); reached by two spellings, only the server can
    tell, and the run is refused before it touches anything."""
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('schema = "public"', 'schema = "auth_default"'))
    other = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    done = example.fleet("migrate", env={"INGESTION_DATABASE_URL": other})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "auth_default" in done.stderr and "ingestion" in done.stderr, done.stderr
    assert "auth" in done.stderr and "psycopg2" in done.stderr
    assert not query(example.db_url, "SELECT nspname FROM pg_namespace "
                     "WHERE nspname IN ('auth_default', 'fleet')")
    # Whatever the run selects, and before anything is written or shown as to be done.
    for narrowed in (["ingestion"], ["--dry-run"], ["--sql"], ["auth", "--tenant", "default"]):
        done = example.fleet("migrate", *narrowed, env={"INGESTION_DATABASE_URL": other})
        assert done.returncode == 2, (narrowed, done.stdout + done.stderr)
        assert "both use schema 'auth_default'" in done.stderr, (narrowed, done.stderr)
    plan = example.fleet("plan", env={"INGESTION_DATABASE_URL": other})
    assert plan.returncode == 2 and "auth_default" in plan.stderr, plan.stdout + plan.stderr
    assert not query(example.db_url, "SELECT nspname FROM pg_namespace "
                     "WHERE nspname IN ('auth_default', 'fleet')")


def test_a_new_tenant_whose_schema_is_another_services_is_refused_unrecorded(
        example: Project) -> None:
    """A tenant whose schema a single-schema service already uses in the same database,
    reached by another URL: 'tenants add' refuses before recording it (it recorded it,
    and the tenant's service then read the other's version row: 'ahead', never built)."""
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('schema = "public"', 'schema = "auth_zeta"'))
    other = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {"INGESTION_DATABASE_URL": other}
    assert example.fleet("migrate", env=env).returncode == 0  # zeta is not a tenant yet
    before = toml.read_text()
    added = example.fleet("tenants", "add", "zeta", env=env)
    assert added.returncode == 2, added.stdout + added.stderr
    assert "both use schema 'auth_zeta'" in added.stderr, added.stderr
    assert toml.read_text() == before
    assert not query(example.db_url, "SELECT 1 FROM pg_namespace WHERE nspname = "
                     "'workflow_zeta'")


def test_a_copied_server_is_another_database(example: Project, tmp_path: Path) -> None:
    """A server copied from another (a restored base backup, a snapshot) keeps its
    cluster's system identifier, and serves another database: its ledger is listed too."""
    first = EmbeddedServer(tmp_path / "first")
    first.start()
    first.stop()
    subprocess.run(["cp", "-a", str(tmp_path / "first"), str(tmp_path / "copy")], check=True)
    copy = EmbeddedServer(tmp_path / "copy")
    try:
        env = {"DATABASE_URI": first.start(), "INGESTION_DATABASE_URL": copy.start()}
        done = example.fleet("migrate", "--json", env=env)
        assert done.returncode == 0, done.stderr
        log = example.fleet("log", "--json", env=env)
        assert log.returncode == 0, log.stderr
        runs = json.loads(log.stdout)["runs"]
        assert sorted(r["migrated"] for r in runs) == [1, 6]
        assert len({r["run_id"] for r in runs}) == 1  # one run, a row on each server
        details = example.fleet("log", "--run", runs[0]["run_id"][:8], "--json", env=env)
        assert len(json.loads(details.stdout)["targets"]) == 7
    finally:
        first.stop()
        copy.stop()


def test_a_tenant_holding_another_services_schema_is_neither_added_nor_removed(
        example: Project) -> None:
    """Recorded without migrating (--no-migrate), such a tenant would be refused by every
    later plan; listed by hand, removing it would drop the other service's schema and its
    data. Both are refused, and nothing changes."""
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text().replace('schema = "public"', 'schema = "auth_zeta"'))
    other = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {"INGESTION_DATABASE_URL": other}
    assert example.fleet("migrate", env=env).returncode == 0
    held = query(example.db_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'auth_zeta'")
    before = toml.read_text()
    added = example.fleet("tenants", "add", "zeta", "--no-migrate", env=env)
    assert added.returncode == 2 and "both use schema 'auth_zeta'" in added.stderr, (
        added.stdout + added.stderr)
    assert toml.read_text() == before
    toml.write_text(before.replace('tenants = ["default"', 'tenants = ["zeta", "default"', 1))
    assert '"zeta"' in toml.read_text()
    removed = example.fleet("tenants", "remove", "zeta", "--yes", env=env)
    assert removed.returncode == 2 and "both use schema 'auth_zeta'" in removed.stderr, (
        removed.stdout + removed.stderr)
    assert query(example.db_url, "SELECT count(*) FROM pg_tables "
                 "WHERE schemaname = 'auth_zeta'") == held != [(0,)]
    assert '"zeta"' in toml.read_text()


def test_a_url_that_is_not_valid_does_not_stop_a_run_that_does_not_use_it(
        example: Project) -> None:
    """The owners check asks the servers of every URL that shares a schema name; one whose
    URL cannot be used is its own database, and a run of the other services goes on."""
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text().replace(
        '[services.ingestion]', '[services.ingest2]\npath = "python_apps/ingestion-service"'
        '\ndatabase = "${DATABASE_URI}"\nschema = "public"\n\n[services.ingestion]'))
    broken = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1) + "?port=x"
    done = example.fleet("migrate", "ingest2", "--dry-run", env={
        "INGESTION_DATABASE_URL": broken})
    assert done.returncode == 0, done.stdout + done.stderr


def test_removing_a_name_that_is_not_a_tenant_never_drops_a_configured_targets_schema(
        example: Project) -> None:
    """A name that is not configured loses only its orphan schemas; one that another URL
    of the same database gives to a configured target (here auth's tenant 'default') is
    not an orphan, and the remove is refused with nothing dropped."""
    toml = example.root / "fleet.toml"
    toml.write_text(toml.read_text() + '\n[services.bare]\npath = "python_apps/auth_api"\n'
                    'schema = "{tenant}"\ndatabase = "${INGESTION_DATABASE_URL}"\n')
    other = example.db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    env = {"INGESTION_DATABASE_URL": other}
    done = example.fleet("migrate", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    held = query(example.db_url, "SELECT count(*) FROM pg_tables "
                 "WHERE schemaname = 'auth_default'")
    removed = example.fleet("tenants", "remove", "auth_default", "--yes", env=env)
    assert removed.returncode == 2, removed.stdout + removed.stderr
    assert "both use schema 'auth_default'" in removed.stderr, removed.stderr
    assert query(example.db_url, "SELECT count(*) FROM pg_tables "
                 "WHERE schemaname = 'auth_default'") == held != [(0,)]
