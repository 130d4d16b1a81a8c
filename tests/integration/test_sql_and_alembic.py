"""Offline SQL (``fleet migrate --sql``) and plain ``alembic`` in a service folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import DatabaseFactory, Project, query, schemas, tables, version

pytestmark = pytest.mark.slow

AUTH_HEAD = "a15f8c0e3d96"


def _bin(name: str) -> str:
    """psql / pg_dump from the embedded package: recent enough for any test server."""
    return str(EmbeddedServer(Path("/nonexistent")).bin_path() / name)


def _dump(url: str, *schemas: str) -> str:
    """The DDL of these schemas (names or pg_dump patterns), comparable between databases."""
    selected = [arg for schema in schemas for arg in ("-n", schema)]
    out = subprocess.run(
        [_bin("pg_dump"), "--schema-only", "--no-owner", "--no-privileges", *selected, url],
        capture_output=True, text=True, check=True,
    ).stdout
    return "\n".join(line for line in out.splitlines()
                     if line.strip() and not line.startswith(("--", "\\restrict", "\\unrestrict",
                                                               "SET ", "SELECT pg_catalog"))
                     and "pg_attver=" not in line)


def test_sql_output_applies_with_psql_like_online_mode(
    example: Project, databases: DatabaseFactory
) -> None:
    result = example.fleet("migrate", "auth", "--sql")
    assert result.returncode == 0, result.stderr
    sql = result.stdout
    assert "-- auth/auth_default" in sql and "-- auth/auth_iopex" in sql
    assert 'CREATE SCHEMA IF NOT EXISTS "auth_toshiba"' in sql
    assert "BEGIN;" in sql and "COMMIT;" in sql
    # Printing SQL executed nothing.
    assert not schemas(example.db_url, "auth_%")

    offline = databases.create("fleet_sql")
    applied = subprocess.run([_bin("psql"), "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", offline],
                             input=sql, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert example.fleet("migrate", "auth").returncode == 0
    for tenant in ("default", "toshiba", "iopex"):
        schema = f"auth_{tenant}"
        assert version(offline, schema) == [AUTH_HEAD]
        assert _dump(offline, schema) == _dump(example.db_url, schema)


def test_sql_starts_from_the_current_revision(example: Project) -> None:
    assert example.fleet("migrate", "auth", "--to", "a13e9a4c7b14").returncode == 0
    result = example.fleet("migrate", "auth", "--tenant", "default", "--sql")
    assert result.returncode == 0
    assert "a13e9a4c7b14 -> a15f8c0e3d96" in result.stdout
    assert "UPDATE" in result.stdout and "alembic_version" in result.stdout
    assert "CREATE TABLE organizations" not in result.stdout


def test_plain_alembic_in_a_service_folder(example: Project) -> None:
    auth = "python_apps/auth_api"
    up = example.alembic(auth, "upgrade", "head", env={"ALEMBIC_SCHEMA": "auth_default"})
    assert up.returncode == 0, up.stderr
    assert "Running upgrade  -> a1003f6c2b81" in up.stderr
    assert version(example.db_url, "auth_default") == [AUTH_HEAD]
    assert "alembic_version" not in tables(example.db_url, "public")

    current = example.alembic(auth, "current", env={"ALEMBIC_SCHEMA": "auth_default"})
    assert current.returncode == 0, current.stderr
    assert AUTH_HEAD in current.stdout

    # -x tenant=NAME maps through the fleet.toml schema template.
    up = example.alembic(auth, "-x", "tenant=toshiba", "upgrade", "head")
    assert up.returncode == 0, up.stderr
    assert version(example.db_url, "auth_toshiba") == [AUTH_HEAD]

    offline = example.alembic(auth, "upgrade", "head", "--sql",
                              env={"ALEMBIC_SCHEMA": "auth_iopex"})
    assert offline.returncode == 0, offline.stderr
    assert 'SET search_path TO "auth_iopex"' in offline.stdout
    assert "auth_iopex" not in schemas(example.db_url, "auth_%")

    # fleet sees what plain alembic did.
    status = example.fleet("status", "auth", "--json")
    assert '"state": "at_head"' in status.stdout and '"state": "missing"' in status.stdout

    # A typo in -x tenant= is refused, as fleet's --tenant refuses it: it created the
    # schemas of a tenant nobody configured, an orphan for fleet afterwards.
    typo = example.alembic(auth, "-x", "tenant=toshibaa", "upgrade", "head")
    assert typo.returncode != 0
    assert "'toshibaa' is not configured" in typo.stdout + typo.stderr
    assert "fleet tenants add toshibaa" in typo.stdout + typo.stderr
    assert "Traceback" not in typo.stdout + typo.stderr
    assert "auth_toshibaa" not in schemas(example.db_url, "auth_%")
    # A schema named outright is the user's choice; one of no configured tenant is said.
    named = example.alembic(auth, "upgrade", "head", env={"ALEMBIC_SCHEMA": "auth_typo"})
    assert named.returncode == 0, named.stderr
    assert "auth_typo is the schema of tenant 'typo', which is not configured" in named.stderr
    named = example.alembic(auth, "-x", "schema=auth_typo2", "upgrade", "head")
    assert named.returncode == 0, named.stderr
    assert "auth_typo2 is the schema of tenant 'typo2', which is not configured" in (
        named.stderr)

    # A per-tenant service without a schema: a clear error, nothing created.
    missing = example.alembic(auth, "upgrade", "head")
    assert missing.returncode != 0
    assert "ALEMBIC_SCHEMA" in missing.stdout + missing.stderr
    assert "Traceback" not in missing.stdout + missing.stderr

    # The single-schema service needs no schema at all.
    ingestion = example.alembic("python_apps/ingestion-service", "upgrade", "head")
    assert ingestion.returncode == 0, ingestion.stderr
    assert version(example.ingestion_url, "public") == ["c34d3f5c6b84"]


def test_alembic_check_reports_no_schema_noise(example: Project) -> None:
    """Autogenerate against a tenant schema at head finds no differences: nothing
    schema-qualified, no proposal to drop the version table."""
    assert example.fleet("migrate").returncode == 0
    for folder, schema in (("python_apps/auth_api", "auth_toshiba"),
                           ("python_apps/workflow-engine-poc", "workflow_default")):
        check = example.alembic(folder, "check", env={"ALEMBIC_SCHEMA": schema})
        assert check.returncode == 0, check.stdout + check.stderr
        assert "No new upgrade operations detected" in check.stdout + check.stderr
    rows = query(example.db_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' "
                 "AND tablename <> 'fleet_test_ddl_log'")
    assert rows[0][0] == 0
