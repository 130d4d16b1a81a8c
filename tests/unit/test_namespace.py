"""Schema ownership: every refusal of SchemaNamespace.build and every query (no database)."""

from __future__ import annotations

import itertools
import os
import textwrap
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alembic_fleet.config.loader import TENANTS_ENV_KEY, parse_config
from alembic_fleet.exceptions import ConfigError, FleetError
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.identifiers import TENANT_PATTERN, render_schema
from alembic_fleet.model.namespace import Owner, SchemaNamespace, template_collision
from alembic_fleet.model.targets import Database, Service, Target, targets_for

MAIN = Database(url="postgresql://u@h/main")
OTHER = Database(url="postgresql://u@h/other")
OWN = Database(url="postgresql://u@h2/toshiba")


def svc(name: str, schema: str, database: Database = MAIN, version_table: str = "alembic_version"
        ) -> Service:
    return Service(name, Path(name), schema, database, version_table=version_table)


def build(*services: Service, tenants: tuple[str, ...] = ("default", "toshiba"),
          tenant_databases: dict[str, Database] | None = None,
          ledger: str | None = "fleet") -> SchemaNamespace:
    return SchemaNamespace.build({s.name: s for s in services}, tenants,
                                 tenant_databases or {}, ledger, file="fleet.toml")


def refused(*services: Service, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        build(*services, **kwargs)  # type: ignore[arg-type]
    assert exit_code(info.value) == 2
    assert info.value.hint
    assert "fleet.toml" in str(info.value)
    return str(info.value)


# --- the collision rule -----------------------------------------------------------------


@pytest.mark.parametrize(("first", "second", "expected"), [
    ("auth_{tenant}", "auth_audit_{tenant}", ("audit_a", "a", "auth_audit_a")),
    ("auth_audit_{tenant}", "auth_{tenant}", ("a", "audit_a", "auth_audit_a")),
    ("auth_{tenant}", "auth_{tenant}", ("a", "a", "auth_a")),
    ("{tenant}", "x_{tenant}", ("x_a", "a", "x_a")),
    ("{tenant}_eu", "{tenant}", ("a", "a_eu", "a_eu")),
    ("a{tenant}", "{tenant}b", ("b", "a", "ab")),
    ("{tenant}-b", "a-{tenant}", ("a", "b", "a-b")),  # the literal texts overlap
    ("a_{tenant}", "a_1{tenant}", None),  # a tenant cannot start with '1'
    ("a_{tenant}", "a__{tenant}", None),  # ... nor with '_'
    ("a{tenant}", "a{tenant}_", ("a_", "a", "aa_")),
    ("auth_{tenant}", "audit_{tenant}", None),  # prefixes not comparable
    ("{tenant}_x", "{tenant}_y", None),  # suffixes not comparable
    ("{tenant}", "A{tenant}", None),  # 'A' is no tenant character
    ("{tenant}-x", "{tenant}", None),  # '-' is no tenant character
    ("{tenant}-b", "a-{tenant}-b", None),  # nested around a non-tenant character
    ("auth_{tenant}", "auth_main", None),  # a fixed schema is no template
])
def test_template_collision_examples(first: str, second: str,
                                     expected: tuple[str, str, str] | None) -> None:
    assert template_collision(first, second) == expected


def test_a_collision_must_fit_in_63_bytes() -> None:
    short, fits, too_long = "a" * 30 + "{tenant}", "a" * 30 + "b" * 32, "a" * 30 + "b" * 33
    assert template_collision(short, fits + "{tenant}") == (
        "b" * 32 + "a", "a", fits + "a")
    assert template_collision(short, too_long + "{tenant}") is None


PARTS = st.text(alphabet="ab1_-", max_size=3)
TENANT_CHARS = "ab1_"  # a letter, another letter, a digit and '_' stand for the alphabet


@cache
def short_tenants() -> tuple[str, ...]:
    """Every valid tenant name over TENANT_CHARS up to 7 characters: with prefixes and
    suffixes of at most 3 characters, the shortest collision needs at most 3 + 1 + 3."""
    names = ("".join(p) for n in range(1, 8) for p in itertools.product(TENANT_CHARS, repeat=n))
    return tuple(n for n in names if TENANT_PATTERN.fullmatch(n))


@cache
def renderings(template: str) -> dict[str, str]:
    prefix, _, suffix = template.partition("{tenant}")
    return {prefix + t + suffix: t for t in short_tenants()}


@settings(max_examples=400, deadline=None)
@given(PARTS, PARTS, PARTS, PARTS)
def test_collision_rule_matches_brute_force(p1: str, s1: str, p2: str, s2: str) -> None:
    """The rule decides exactly what a search over short tenant names finds, and its example
    is a real collision of the shortest possible schema."""
    first, second = f"{p1}{{tenant}}{s1}", f"{p2}{{tenant}}{s2}"
    found = renderings(first).keys() & renderings(second).keys()
    result = template_collision(first, second)
    if not found:
        assert result is None
        return
    assert result is not None
    tenant_a, tenant_b, schema = result
    assert render_schema(first, tenant_a) == schema == render_schema(second, tenant_b)
    assert len(schema) == min(len(s) for s in found)


# --- refusals -------------------------------------------------------------------------


def test_overlapping_templates_are_refused_naming_both_and_an_example() -> None:
    message = refused(svc("auth", "auth_{tenant}"), svc("auth_audit", "auth_audit_{tenant}"))
    assert "'auth'" in message and "'auth_audit'" in message
    assert "tenant 'audit_a' of 'auth' and tenant 'a' of 'auth_audit'" in message
    assert "key 'services.auth_audit.schema'" in message


@pytest.mark.parametrize(("first", "second"), [
    ("auth_{tenant}", "auth_{tenant}"), ("{tenant}", "x_{tenant}"), ("{tenant}_eu", "{tenant}"),
])
def test_more_overlapping_templates_are_refused(first: str, second: str) -> None:
    message = refused(svc("one", first), svc("two", second))
    assert "'one'" in message and "'two'" in message and "both render" in message


def test_non_overlapping_templates_are_accepted() -> None:
    build(svc("auth", "auth_{tenant}"), svc("audit", "audit_{tenant}"),
          svc("a", "a_{tenant}"), svc("a1", "a_1{tenant}"))


def test_overlapping_templates_on_separate_databases() -> None:
    build(svc("auth", "auth_{tenant}"), svc("audit", "auth_audit_{tenant}", OTHER))
    # A tenant with its own server brings every per-tenant schema of it together.
    message = refused(svc("auth", "auth_{tenant}"), svc("audit", "auth_audit_{tenant}", OTHER),
                      tenant_databases={"toshiba": OWN})
    assert "'auth'" in message and "'audit'" in message


def test_two_services_in_one_schema_of_one_database() -> None:
    message = refused(svc("ingestion", "public"), svc("billing", "public"))
    assert "services 'ingestion' and 'billing' both use schema 'public'" in message
    assert "key 'services.billing.schema'" in message
    # Different version tables do not make it safe: tenants remove drops whole schemas.
    refused(svc("a", "shared"), svc("b", "shared", version_table="b_version"))
    build(svc("ingestion", "public"), svc("billing", "public", OTHER))


@pytest.mark.parametrize(("schema", "reason"), [
    ("information_schema", "which is reserved by PostgreSQL"),
    ("pg_catalog", "which is reserved by PostgreSQL"),
    ("pg_toast", "which is reserved by PostgreSQL"),
    ("pg_temp", "which is reserved by PostgreSQL"),
    ("fleet", "which holds fleet's ledger"),
])
def test_reserved_schema_for_a_single_schema_service(schema: str, reason: str) -> None:
    message = refused(svc("billing", schema))
    assert f"service 'billing' uses schema '{schema}', {reason}" in message
    assert "key 'services.billing.schema'" in message


def test_public_and_ledgerless_names_are_allowed_for_a_single_schema_service() -> None:
    build(svc("ingestion", "public"), svc("reports", "pgx"))
    build(svc("billing", "fleet"), ledger=None)
    build(svc("billing", "fleet"), ledger="fleet_ledger")


def test_template_whose_every_schema_is_reserved() -> None:
    message = refused(svc("auth", "pg_{tenant}"))
    assert "'auth'" in message and "'pg_{tenant}'" in message and "PostgreSQL" in message
    build(svc("auth", "pg{tenant}"))  # a tenant never starts with '_'


@pytest.mark.parametrize(("tenant", "reason"), [
    ("public", "which is reserved by PostgreSQL"),
    ("information_schema", "which is reserved by PostgreSQL"),
    ("pg_x", "which is reserved by PostgreSQL"),
    ("fleet", "which holds fleet's ledger"),
])
def test_tenant_rendering_a_reserved_schema(tenant: str, reason: str) -> None:
    message = refused(svc("app", "{tenant}"), tenants=("default", tenant))
    assert f"tenant '{tenant}' of service 'app' renders schema '{tenant}', {reason}" in message
    assert "key 'tenants'" in message


def test_tenant_rendering_another_services_schema() -> None:
    message = refused(svc("ingestion", "public"), svc("auth", "{tenant}"),
                      tenants=("default", "public"))
    assert ("tenant 'public' of service 'auth' renders schema 'public', which belongs to "
            "service 'ingestion'") in message
    message = refused(svc("auth", "auth_{tenant}"), svc("main", "auth_main"),
                      tenants=("main",))
    assert ("tenant 'main' of service 'auth' renders schema 'auth_main', which belongs to "
            "service 'main'") in message
    # Not in the same database: no conflict; unless the tenant's own server is that one.
    build(svc("auth", "auth_{tenant}"), svc("main", "auth_main", OTHER), tenants=("main",))
    refused(svc("auth", "auth_{tenant}"), svc("main", "auth_main", OTHER), tenants=("main",),
            tenant_databases={"main": OTHER})


def test_too_long_schema_names_the_service_and_key() -> None:
    message = refused(svc("auth", "auth_{tenant}"), tenants=("t" * 60,))
    assert "longer than 63 bytes" in message and "(service 'auth')" in message
    assert "key 'tenants'" in message


# --- queries --------------------------------------------------------------------------


@pytest.fixture
def namespace() -> SchemaNamespace:
    return build(svc("auth", "auth_{tenant}"), svc("workflow", "workflow_{tenant}", OTHER),
                 svc("ingestion", "public"), svc("audit", "audit_log"),
                 tenants=("default", "toshiba"),
                 tenant_databases={"toshiba": OWN, "later": OWN})


def test_owner_of(namespace: SchemaNamespace) -> None:
    assert namespace.owner_of(MAIN.key, "auth_default") == Owner("target", "auth", "default")
    assert namespace.owner_of(OTHER.key, "workflow_default") == Owner(
        "target", "workflow", "default")
    assert namespace.owner_of(OWN.key, "auth_toshiba") == Owner("target", "auth", "toshiba")
    assert namespace.owner_of(OWN.key, "workflow_toshiba") == Owner(
        "target", "workflow", "toshiba")
    assert namespace.owner_of(MAIN.key, "public") == Owner("target", "ingestion", None)
    assert namespace.owner_of(MAIN.key, "fleet") == Owner("ledger")
    assert namespace.owner_of(OWN.key, "fleet") == Owner("ledger")
    assert namespace.owner_of(MAIN.key, "auth_toshiba") is None  # it lives on its own server
    assert namespace.owner_of(OTHER.key, "public") is None
    assert namespace.owner_of(MAIN.key, "auth_gone") is None


def test_template_owner(namespace: SchemaNamespace) -> None:
    assert namespace.template_owner(MAIN.key, "auth_default") == ("auth", "default")
    assert namespace.template_owner(MAIN.key, "auth_gone") == ("auth", "gone")  # an orphan
    assert namespace.template_owner(OTHER.key, "workflow_gone") == ("workflow", "gone")
    assert namespace.template_owner(OTHER.key, "auth_gone") is None  # auth is not there
    assert namespace.template_owner(MAIN.key, "auth_1x") is None  # not a tenant name
    assert namespace.template_owner(MAIN.key, "auth_") is None
    assert namespace.template_owner(MAIN.key, "audit_log") is None
    assert namespace.template_owner(MAIN.key, "public") is None
    assert namespace.template_owner(MAIN.key, "fleet") is None
    # Tenants with their own server (configured or listed later) have their schemas there.
    assert namespace.template_owner(OWN.key, "auth_toshiba") == ("auth", "toshiba")
    assert namespace.template_owner(MAIN.key, "auth_toshiba") is None
    assert namespace.template_owner(OWN.key, "workflow_later") == ("workflow", "later")
    assert namespace.template_owner(OTHER.key, "workflow_later") is None
    assert namespace.template_owner(OWN.key, "auth_gone") is None


def test_template_owner_never_returns_reserved_or_owned_schemas() -> None:
    namespace = build(svc("app", "{tenant}"), svc("ingestion", "public", OTHER),
                      svc("billing", "billing"), tenants=("acme",))
    assert namespace.template_owner(MAIN.key, "acme") == ("app", "acme")
    assert namespace.template_owner(MAIN.key, "gone") == ("app", "gone")
    for schema in ("public", "information_schema", "pg_toast", "pg_temp_3", "fleet", "billing"):
        assert namespace.template_owner(MAIN.key, schema) is None, schema
    assert namespace.template_owner(MAIN.key, "x" * 64) is None


def test_schemas_of(namespace: SchemaNamespace) -> None:
    assert namespace.schemas_of("default") == [
        Target("auth", "default", "auth_default", MAIN),
        Target("workflow", "default", "workflow_default", OTHER),
    ]
    assert namespace.schemas_of("toshiba") == [
        Target("auth", "toshiba", "auth_toshiba", OWN),
        Target("workflow", "toshiba", "workflow_toshiba", OWN),
    ]
    assert namespace.schemas_of("gone") == []


def test_check_new_tenant() -> None:
    namespace = build(svc("auth", "auth_{tenant}"), svc("main", "auth_main"),
                      tenants=("default",))
    namespace.check_new_tenant("acme")
    namespace.check_new_tenant("default")
    with pytest.raises(ConfigError, match="renders schema 'auth_main', which belongs to "
                       "service 'main'") as info:
        namespace.check_new_tenant("main")
    assert info.value.key == "tenants"
    with pytest.raises(ConfigError, match="key 'tenants add'"):
        namespace.check_new_tenant("main", key="tenants add")
    with pytest.raises(ConfigError, match="invalid tenant name"):
        namespace.check_new_tenant("Main")
    with pytest.raises(ConfigError, match="longer than 63 bytes"):
        namespace.check_new_tenant("t" * 60)
    public = build(svc("app", "{tenant}"), tenants=("default",))
    with pytest.raises(ConfigError, match="reserved by PostgreSQL"):
        public.check_new_tenant("public")
    with pytest.raises(ConfigError, match="fleet's ledger"):
        public.check_new_tenant("fleet")


def test_with_tenants(namespace: SchemaNamespace) -> None:
    other = namespace.with_tenants(["acme"], {})
    assert other.tenants == ("acme",)
    assert other.schemas_of("acme")[0] == Target("auth", "acme", "auth_acme", MAIN)
    assert other.owner_of(MAIN.key, "auth_default") is None
    assert namespace.owner_of(MAIN.key, "auth_default") is not None  # unchanged
    assert other.template_owner(MAIN.key, "auth_toshiba") == ("auth", "toshiba")
    with pytest.raises(ConfigError, match=r"key 'tenants\.query'"):
        namespace.with_tenants(["t" * 60], {}, key="tenants.query")
    # The service-level refusals happen once, at load: with_tenants keeps the services.
    assert other.services == namespace.services


def test_with_more_tenants_is_the_namespace_built_for_all_of_them() -> None:
    """Adding tenants to the end (``fleet tenants add``) extends the namespace instead of
    building it again for every tenant (a tenth of a second at 10,000): the result, and
    the refusals, are those of a full build."""
    services = (svc("auth", "auth_{tenant}"), svc("main", "auth_main"),
                svc("own", "own_{tenant}", OTHER))
    first = build(*services, tenants=("default", "toshiba"),
                  tenant_databases={"toshiba": OWN})
    more = first.with_tenants(["default", "toshiba", "acme", "b2"], {"toshiba": OWN},
                              key="tenants add")
    whole = build(*services, tenants=("default", "toshiba", "acme", "b2"),
                  tenant_databases={"toshiba": OWN})
    assert more.tenants == whole.tenants
    assert more._targets == whole._targets and more._owners == whole._owners
    assert more.owner_of(MAIN.key, "auth_acme") == Owner("target", "auth", "acme")
    assert first.owner_of(MAIN.key, "auth_acme") is None  # unchanged
    for tenants, expected in ((["default", "toshiba", "main"], "belongs to service 'main'"),
                              (["default", "toshiba", "t" * 60], "longer than 63 bytes"),
                              (["default", "toshiba", "Acme"], "Acme")):
        with pytest.raises(ConfigError, match=r"key 'tenants add'") as info:
            first.with_tenants(tenants, {"toshiba": OWN}, key="tenants add")
        assert expected in str(info.value), str(info.value)
    # Tenants in another order, or other tenant databases: built again, as before.
    again = first.with_tenants(["toshiba", "default"], {})
    assert again._targets == build(*services, tenants=("toshiba", "default"))._targets


# --- through the configuration file ------------------------------------------------------


def write(root: Path, body: str, services: tuple[str, ...]) -> Path:
    for name in services:
        (root / name).mkdir(parents=True)
        (root / name / "alembic.ini").write_text("[alembic]\n")
    path = root / "fleet.toml"
    path.write_text(textwrap.dedent(body))
    return path


OVERLAP = """
    database = "postgresql://u@h/main"
    tenants = ["acme"]
    [services.auth]
    path = "auth"
    schema = "auth_{tenant}"
    [services.auth_audit]
    path = "auth_audit"
    schema = "auth_audit_{tenant}"
"""

TENANT_IN_PUBLIC = """
    database = "postgresql://u@h/main"
    tenants = ["default", "public"]
    [services.app]
    path = "app"
    schema = "{tenant}"
    [services.ingestion]
    path = "ingestion"
    schema = "public"
"""


def test_config_refusals_name_the_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path / "a", OVERLAP, ("auth", "auth_audit"))
    with pytest.raises(ConfigError) as info:
        parse_config(path, {})
    assert info.value.file == str(path) and info.value.key == "services.auth_audit.schema"
    assert "'auth'" in str(info.value) and "'auth_audit'" in str(info.value)

    path = write(tmp_path / "b", TENANT_IN_PUBLIC, ("app", "ingestion"))
    with pytest.raises(ConfigError) as info:
        parse_config(path, {})
    assert info.value.key == "tenants"
    assert "tenant 'public' of service 'app'" in str(info.value)
    assert "belongs to service 'ingestion'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config(path, {"TENANTS": "acme fleet"})
    assert info.value.key == TENANTS_ENV_KEY and "fleet's ledger" in str(info.value)


def test_config_keeps_and_rebuilds_the_namespace(tmp_path: Path) -> None:
    path = write(tmp_path, TENANT_IN_PUBLIC.replace('"default", "public"', '"default"'),
                 ("app", "ingestion"))
    config = parse_config(path, {})
    main = config.services["app"].database.key
    assert config.namespace.owner_of(main, "default") == Owner("target", "app", "default")
    assert config.namespace.template_owner(main, "public") is None
    resolved = config.with_tenants(["acme", "default"])
    assert resolved.namespace.owner_of(main, "acme") == Owner("target", "app", "acme")
    assert config.namespace.owner_of(main, "acme") is None
    with pytest.raises(ConfigError) as info:
        config.with_tenants(["public"])
    assert info.value.key == "tenants.query" and "'ingestion'" in str(info.value)
    with pytest.raises(ConfigError, match="key 'tenants add'"):
        config.with_tenants(["public"], key="tenants add")


def test_the_bundled_example_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "elevaite" / "fleet.toml"
    for environ in ({}, {"DATABASE_URI": "postgresql://u@h/one"}):
        config = parse_config(example, environ)
        assert [t.schema for t in config.namespace.schemas_of("toshiba")] == [
            "auth_toshiba", "workflow_toshiba"]


def test_targets_are_those_targets_for_makes(namespace: SchemaNamespace) -> None:
    """The namespace hands out the targets it built (no second rendering): the same values,
    in the same order, as targets_for; a tenant it does not know is rendered then."""
    services = list(namespace.services.values())
    for chosen in (services, services[::-1], services[1:2], services[2:]):
        for tenants in (["default", "toshiba"], ["toshiba"], ["default", "later"], []):
            assert namespace.targets(chosen, tenants) == targets_for(
                chosen, tenants, namespace.tenant_databases), (chosen, tenants)
    made = namespace.targets(services[:1], ["default"])[0]
    assert made is namespace.schemas_of("default")[0]  # not made again
    with pytest.raises(FleetError, match="invalid tenant name"):
        namespace.targets(services[:1], ["Nope"])


def test_a_target_hashes_as_its_values() -> None:
    """Targets cache their hash; equal targets still hash alike, a changed copy does not
    keep the old hash."""
    a = Target("auth", "acme", "auth_acme", MAIN)
    assert hash(a) == hash(Target("auth", "acme", "auth_acme", Database(url=MAIN.url)))
    assert {a: 1}[Target("auth", "acme", "auth_acme", MAIN)] == 1
    moved = replace(a, database=OTHER)
    assert moved != a and hash(moved) == hash(Target("auth", "acme", "auth_acme", OTHER))
    assert Database(embedded_name="x").key == "embedded:///x" and MAIN.key == MAIN.url


def test_a_target_from_another_process_finds_its_equal() -> None:
    """A target pickled by a process with another hash seed (a worker started by spawn, a
    service's own interpreter) hashes as this process's equal target does."""
    import pickle
    import subprocess
    import sys

    made = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; from alembic_fleet.model.targets import "
         "Target, Database; sys.stdout.buffer.write(pickle.dumps(Target('auth', 'a', "
         "'auth_a', Database(url='postgresql://h/d'))))"],
        capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": "1"}).stdout
    here = Target("auth", "a", "auth_a", Database(url="postgresql://h/d"))
    there = pickle.loads(made)
    assert there == here and hash(there) == hash(here) and {here: 1}.get(there) == 1
