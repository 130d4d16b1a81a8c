"""The start-up guard against real PostgreSQL, through the example platform.

A service calls ``require_head`` before serving; these tests check that it passes only at
head, names exactly the failing schemas and the command that fixes them, and reads the
database without writing to it.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from alembic_fleet.exceptions import ConfigError, DatabaseUnavailableError
from alembic_fleet.startup_check import SchemaNotAtHead, require_head
from tests.conftest import Project, ddl_count, query

AUTH_HEAD = "a15f8c0e3d96"
AUTH_BEFORE_HEAD = "a14d2f6b8c35"
AUTH_SCHEMAS = ("auth_default", "auth_toshiba", "auth_iopex")


@pytest.fixture
def platform(example: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The example platform, with this process's environment set as a service's would be."""
    for name in ("TENANTS", "FLEET_CONFIG", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in example.env.items():
        monkeypatch.setenv(name, value)
    return example


@pytest.fixture
def migrated(platform: Project) -> Project:
    result = platform.fleet("migrate")
    assert result.returncode == 0, result.stdout + result.stderr
    return platform


def config(project: Project) -> Path:
    return project.root / "fleet.toml"


@pytest.mark.slow
def test_at_head_returns_every_schema_and_head(migrated: Project) -> None:
    before = ddl_count(migrated.db_url)
    heads = require_head(migrated.db_url, service="auth", config=config(migrated))
    assert heads == dict.fromkeys(AUTH_SCHEMAS, AUTH_HEAD)
    assert ddl_count(migrated.db_url) == before  # read-only: no DDL


@pytest.mark.slow
def test_database_from_fleet_toml_found_upward_from_the_working_directory(
        migrated: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(migrated.root / "python_apps" / "auth_api")
    assert require_head(service="auth") == dict.fromkeys(AUTH_SCHEMAS, AUTH_HEAD)


@pytest.mark.slow
def test_engine_and_explicit_tenants(migrated: Project) -> None:
    engine = create_engine(
        migrated.db_url.replace("postgresql://", "postgresql+psycopg://"), poolclass=NullPool)
    try:
        heads = require_head(engine, service="auth", tenants="toshiba, iopex",
                             config=config(migrated))
    finally:
        engine.dispose()
    assert heads == {"auth_toshiba": AUTH_HEAD, "auth_iopex": AUTH_HEAD}


def test_fresh_database_names_every_schema_and_fleet_migrate(platform: Project) -> None:
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(platform.db_url, service="auth", config=config(platform))
    error = caught.value
    assert error.command == "fleet migrate auth"
    assert [f.schema for f in error.failures] == list(AUTH_SCHEMAS)
    assert {f.state for f in error.failures} == {"missing"}
    assert error.heads == (AUTH_HEAD,)
    assert error.schema == "auth_default" and error.current == ()
    message = str(error)
    assert "auth_toshiba has no version table" in message
    assert message.endswith("run 'fleet migrate auth' before starting the service")
    assert isinstance(error, RuntimeError)


def test_one_tenant_asked_for_gets_a_tenant_command(platform: Project) -> None:
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(platform.db_url, service="auth", tenant="iopex", config=config(platform))
    assert str(caught.value) == ("auth_iopex has no version table: run 'fleet migrate auth "
                                 "--tenant iopex' before starting the service")


@pytest.mark.slow
def test_one_tenant_behind_is_named_alone(migrated: Project) -> None:
    result = migrated.fleet("downgrade", "auth", "--tenant", "toshiba", "-1", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(migrated.db_url, service="auth", config=config(migrated))
    error = caught.value
    assert [f.schema for f in error.failures] == ["auth_toshiba"]
    assert error.command == "fleet migrate auth --tenant toshiba"
    assert (error.service, error.schema, error.current) == (
        "auth", "auth_toshiba", (AUTH_BEFORE_HEAD,))
    assert str(error) == (f"auth_toshiba is at {AUTH_BEFORE_HEAD}, head is {AUTH_HEAD}: "
                          "run 'fleet migrate auth --tenant toshiba' before starting the service")


@pytest.mark.slow
def test_unknown_revision_is_ahead(migrated: Project) -> None:
    query(migrated.db_url, "UPDATE auth_iopex.alembic_version SET version_num = 'f00dfeedbeef'")
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(migrated.db_url, service="auth", config=config(migrated))
    error = caught.value
    assert [(f.schema, f.state) for f in error.failures] == [("auth_iopex", "ahead")]
    assert str(error) == ("auth_iopex is at f00dfeedbeef, which these scripts do not know: "
                          "deploy the newer code or downgrade")
    assert "migrate" not in error.command


@pytest.mark.slow
def test_behind_and_ahead_together_in_one_error(migrated: Project) -> None:
    migrated.fleet("downgrade", "auth", "--tenant", "default", "-1", "--yes")
    query(migrated.db_url, "UPDATE auth_iopex.alembic_version SET version_num = 'f00dfeedbeef'")
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(migrated.db_url, service="auth", config=config(migrated))
    lines = str(caught.value).splitlines()
    assert lines[0] == "service 'auth': 2 schemas are not at head:"
    assert lines[1].strip().startswith("auth_default is at")
    assert "which these scripts do not know" in lines[2]
    assert lines[-1] == "run 'fleet migrate auth --tenant default' before starting the service"


@pytest.mark.slow
def test_single_schema_service(migrated: Project) -> None:
    heads = require_head(service="ingestion", config=config(migrated))  # URL from fleet.toml
    assert list(heads) == ["public"]
    assert heads["public"]


def test_single_schema_service_missing(platform: Project) -> None:
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(platform.ingestion_url, service="ingestion", tenants=["toshiba"],
                     config=config(platform))
    assert caught.value.command == "fleet migrate ingestion"
    assert str(caught.value).startswith("public has no version table: run 'fleet migrate ")


@pytest.mark.slow
def test_without_fleet_toml_alembic_ini_and_schema(migrated: Project) -> None:
    ini = migrated.root / "python_apps" / "auth_api" / "alembic.ini"
    assert require_head(migrated.db_url, alembic_ini=ini, schema="auth_default") == {
        "auth_default": AUTH_HEAD}
    assert require_head(migrated.db_url, alembic_ini=ini, schema="auth_{tenant}",
                        tenants=["iopex"]) == {"auth_iopex": AUTH_HEAD}
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(migrated.db_url, alembic_ini=ini, schema="auth_acme")
    assert caught.value.command == "ALEMBIC_SCHEMA=auth_acme alembic upgrade head"
    with pytest.raises(ConfigError, match="no tenant"):
        require_head(migrated.db_url, alembic_ini=ini, schema="auth_{tenant}")


@pytest.mark.slow
def test_schema_override_of_a_tenant_keeps_the_tenant_command(migrated: Project) -> None:
    migrated.fleet("downgrade", "auth", "--tenant", "iopex", "-1", "--yes")
    assert require_head(migrated.db_url, service="auth", schema="auth_toshiba",
                        config=config(migrated)) == {"auth_toshiba": AUTH_HEAD}
    with pytest.raises(SchemaNotAtHead) as caught:
        require_head(migrated.db_url, service="auth", schema="auth_iopex",
                     config=config(migrated))
    assert caught.value.command == "fleet migrate auth --tenant iopex"


def test_unknown_service_is_a_config_error(platform: Project) -> None:
    with pytest.raises(ConfigError, match="unknown service 'billing'"):
        require_head(platform.db_url, service="billing", config=config(platform))


def test_unreachable_database_never_shows_the_password(platform: Project) -> None:
    url = "postgresql://fleet_user:s3cr3t-Pw@127.0.0.1:1/nowhere"
    with pytest.raises(DatabaseUnavailableError) as caught:
        require_head(url, service="auth", config=config(platform))
    assert "s3cr3t-Pw" not in str(caught.value)
    assert "fleet_user:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.slow
def test_fastapi_lifespan_example(migrated: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    monkeypatch.chdir(migrated.root)
    monkeypatch.syspath_prepend(str(migrated.root / "python_apps" / "auth_api"))
    for name in [m for m in sys.modules if m == "auth_api" or m.startswith("auth_api.")]:
        monkeypatch.delitem(sys.modules, name)
    app_module = importlib.import_module("auth_api.app")

    async def start() -> None:
        async with app_module.lifespan(app_module.app):
            pass

    monkeypatch.setenv("TENANTS", "default toshiba")
    asyncio.run(start())
    assert app_module.app.state.schema_heads == {"auth_default": AUTH_HEAD,
                                                 "auth_toshiba": AUTH_HEAD}
    migrated.fleet("downgrade", "auth", "--tenant", "toshiba", "-1", "--yes")
    with pytest.raises(SchemaNotAtHead, match="fleet migrate auth --tenant toshiba"):
        asyncio.run(start())


def test_the_former_module_name_still_imports() -> None:
    from alembic_fleet import guard, startup_check

    assert guard.require_head is startup_check.require_head
    assert guard.SchemaNotAtHead is startup_check.SchemaNotAtHead
