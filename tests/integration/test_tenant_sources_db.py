"""The registry query tenant source against a real PostgreSQL: resolve the tenants, record
one (insert), forget one (deactivate), and refuse an invalid name found in the registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alembic_fleet.config.loader import FleetConfig, parse_config
from alembic_fleet.config.tenant_sources import forget_tenant, record_tenant, resolve_query
from alembic_fleet.databases import Databases
from alembic_fleet.exceptions import ConfigError, UsageError
from alembic_fleet.model.targets import Database, targets_for
from tests.conftest import query

REGISTRY = """
CREATE TABLE public.tenants (slug text PRIMARY KEY, active boolean NOT NULL DEFAULT true);
INSERT INTO public.tenants (slug, active) VALUES
    ('default', true), ('toshiba', true), ('retired', false);
"""


@pytest.fixture
def registry(db_url: str) -> str:
    query(db_url, REGISTRY)
    return db_url


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[Databases]:
    dbs = Databases(tmp_path / ".fleet")
    try:
        yield dbs
    finally:
        dbs.dispose()


def configure(tmp_path: Path, registry: str, *, statements: bool = True) -> FleetConfig:
    (tmp_path / "auth").mkdir(exist_ok=True)
    (tmp_path / "auth" / "alembic.ini").write_text("[alembic]\n", encoding="utf-8")
    extra = (',\n    insert = "INSERT INTO public.tenants (slug) VALUES (:tenant) '
             'ON CONFLICT (slug) DO UPDATE SET active = true",\n'
             '    delete = "UPDATE public.tenants SET active = false WHERE slug = :tenant"'
             if statements else "")
    path = tmp_path / "fleet.toml"
    path.write_text(
        'database = "postgresql://app@main.invalid/platform"\n'
        "tenants = { query = \"SELECT slug FROM public.tenants WHERE active ORDER BY slug\", "
        f'database = "${{REGISTRY_URL}}"{extra.replace(chr(10), " ")} }}\n'
        "\n[tenant_attributes.toshiba]\ndatabase = \"postgresql://t@toshiba.invalid/db\"\n"
        "priority = 1\n"
        '\n[services.auth]\npath = "auth"\nschema = "auth_{tenant}"\n',
        encoding="utf-8")
    return parse_config(path, {"REGISTRY_URL": registry})


def test_resolve_then_build_targets(tmp_path: Path, registry: str,
                                    engines: Databases) -> None:
    config = configure(tmp_path, registry)
    assert config.tenants == ()
    assert config.tenant_query is not None
    assert config.tenant_query.database == Database(url=registry)
    names = resolve_query(config.tenant_query, engines.connect)
    assert names == ["default", "toshiba"]
    resolved = config.with_tenants(names)
    assert resolved.priority == ("toshiba",)
    targets = targets_for(list(resolved.services.values()), list(resolved.tenants),
                          resolved.tenant_databases)
    assert [(t.schema, t.database.url) for t in targets] == [
        ("auth_default", "postgresql://app@main.invalid/platform"),
        ("auth_toshiba", "postgresql://t@toshiba.invalid/db")]


def test_record_and_forget(tmp_path: Path, registry: str, engines: Databases) -> None:
    config = configure(tmp_path, registry)
    assert config.tenant_query is not None
    assert record_tenant(config, "acme", engines.connect) == "the tenant registry query"
    assert record_tenant(config, "acme", engines.connect) == "the tenant registry query"
    assert record_tenant(config, "retired", engines.connect)  # reactivated by the upsert
    assert resolve_query(config.tenant_query, engines.connect) == [
        "acme", "default", "retired", "toshiba"]
    forget_tenant(config, "toshiba", engines.connect)
    forget_tenant(config, "toshiba", engines.connect)  # already inactive: nothing to do
    assert resolve_query(config.tenant_query, engines.connect) == [
        "acme", "default", "retired"]
    assert query(registry, "SELECT slug, active FROM public.tenants ORDER BY slug") == [
        ("acme", True), ("default", True), ("retired", True), ("toshiba", False)]


def test_invalid_name_in_the_registry(tmp_path: Path, registry: str,
                                      engines: Databases) -> None:
    query(registry, "INSERT INTO public.tenants (slug) VALUES ('Robert''); DROP TABLE x;--')")
    config = configure(tmp_path, registry)
    assert config.tenant_query is not None
    with pytest.raises(ConfigError, match="invalid tenant name") as info:
        resolve_query(config.tenant_query, engines.connect)
    assert "Robert" in str(info.value)
    assert info.value.key == "tenants.query"


def test_missing_registry_table(tmp_path: Path, db_url: str, engines: Databases) -> None:
    config = configure(tmp_path, db_url)
    assert config.tenant_query is not None
    with pytest.raises(ConfigError, match="tenant registry query failed"):
        resolve_query(config.tenant_query, engines.connect)


def test_registry_without_statements(tmp_path: Path, registry: str,
                                     engines: Databases) -> None:
    config = configure(tmp_path, registry, statements=False)
    with pytest.raises(UsageError, match="no 'insert' statement"):
        record_tenant(config, "acme", engines.connect)
    assert query(registry, "SELECT count(*) FROM public.tenants")[0][0] == 3
