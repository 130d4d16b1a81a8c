"""provision = "reference" without a database: the setting, the names fleet reserves for its
reference schemas, the DDL pg_dump gives, and what a revision's file shows."""

from __future__ import annotations

import itertools
import textwrap
import types
from pathlib import Path

import pytest

from alembic_fleet.alembic_bridge.independence import tenant_dependence
from alembic_fleet.config import FleetConfig
from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.execution.provision import local_ddl
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.identifiers import tenant_from_schema
from alembic_fleet.model.namespace import (
    is_reference_schema,
    reference_collision,
    reference_schema,
)
from tests.unit.test_config import make_service

# --- the setting ---------------------------------------------------------------------------


def _config(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> FleetConfig:
    make_service(tmp_path, "svc")
    make_service(tmp_path, "one")
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(body))
    return parse_config(path, environ or {})


def _refused(tmp_path: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, body)
    assert exit_code(info.value) == 2
    return info.value


SERVICES = """
tenants = ["a"]
[services.svc]
path = "svc"
schema = "svc_{tenant}"
[services.one]
path = "one"
schema = "one"
"""


def test_provision_defaults_to_migrate_and_a_service_may_differ(tmp_path: Path) -> None:
    config = _config(tmp_path, SERVICES)
    assert {s.provision for s in config.services.values()} == {"migrate"}
    config = _config(tmp_path, 'provision = "reference"\n' + SERVICES.replace(
        'schema = "one"', 'schema = "one"\nprovision = "migrate"'))
    assert config.services["svc"].provision == "reference"
    assert config.services["one"].provision == "migrate"
    config = _config(tmp_path, 'provision = "${P:-migrate}"\n' + SERVICES, {"P": "reference"})
    assert config.services["svc"].provision == "reference"


@pytest.mark.parametrize(("body", "key"), [
    ('provision = "copy"\n' + SERVICES, "provision"),
    ('provision = true\n' + SERVICES, "provision"),
    (SERVICES.replace('schema = "one"', 'schema = "one"\nprovision = "Reference"'),
     "services.one.provision"),
    ('provision = "reference"\nledger = false\n' + SERVICES, "provision"),
    ('ledger = false\n' + SERVICES.replace('schema = "one"',
                                           'schema = "one"\nprovision = "reference"'),
     "services.one.provision"),
], ids=["unknown", "not-a-string", "case", "no-ledger", "no-ledger-service"])
def test_bad_provision_values_are_refused(tmp_path: Path, body: str, key: str) -> None:
    error = _refused(tmp_path, body)
    assert error.key == key


def test_a_template_that_can_render_a_reference_name_is_refused(tmp_path: Path) -> None:
    risky = SERVICES.replace("svc_{tenant}", "fleet_{tenant}")
    _config(tmp_path, risky)  # fine while no service copies from a reference
    error = _refused(tmp_path, 'provision = "reference"\n' + risky)
    assert error.key == "services.svc.schema" and "fleet_ref_" in str(error)
    # Another ledger schema moves the reserved names out of the template's way.
    _config(tmp_path, 'provision = "reference"\nledger_schema = "ops"\n' + risky)


def test_reference_names_are_never_a_tenants_nor_an_orphan(tmp_path: Path) -> None:
    config = _config(tmp_path, SERVICES.replace("svc_{tenant}", "{tenant}"))
    name = reference_schema("fleet", "0123abcd" + "0" * 56)
    assert name == "fleet_ref_0123abcd"
    owner = config.namespace.owner_of(config.services["svc"].database.key, name)
    assert owner is not None and owner.kind == "ledger"
    assert config.namespace.template_owner(config.services["svc"].database.key, name) is None
    with pytest.raises(ConfigError):
        config.with_tenants(["fleet_ref_0123abcd"])


# --- the names -----------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "expected"), [
    ("fleet_{tenant}", "fleet_ref_00000000"),  # tenant 'ref_00000000'
    ("{tenant}", "fleet_ref_00000000"),
    ("fleet_ref_{tenant}", "fleet_ref_a0000000"),  # a tenant starts with a letter
    ("fleet_ref_1{tenant}", "fleet_ref_1a000000"),
    ("{tenant}_ref_0000abcd", "fleet_ref_0000abcd"),
    ("f{tenant}0", "fleet_ref_00000000"),
    ("fleet_ref_{tenant}_x", None),  # too long by its suffix
    ("auth_{tenant}", None),
    ("fleet_ref_{tenant}g", None),  # 'g' is not a hex digit
    ("fleet_ref__{tenant}", None),  # '_' is not a hex digit
    ("fleet_ref_0123abcd", "fleet_ref_0123abcd"),
    ("fleet_ref_0123abcde", None),
], ids=str)
def test_reference_collision(template: str, expected: str | None) -> None:
    assert reference_collision(template, "fleet") == expected


@pytest.mark.parametrize("template", [
    "fleet_{tenant}", "{tenant}", "fl{tenant}f", "x{tenant}", "fleet_ref_{tenant}", "{tenant}0",
    "fleet_r{tenant}_9", "fleet_ref_9{tenant}", "fleet_ref_{tenant}9", "fleet_ref_0000000{tenant}",
    "fleet_ref_000000{tenant}", "Fleet_{tenant}", "fleet_ref_{tenant}_"])
def test_reference_collision_agrees_with_brute_force(template: str) -> None:
    """Every reference name whose digits are each '0', 'a' or a hex digit of the template's
    own text (a position holds a tenant's digit, a tenant's letter, or the template's text:
    these cover every case), read back as the template's tenant: the rule finds a collision
    exactly when one of them is one."""
    found = None
    alphabet = "0a" + "".join(sorted(set(template) & set("0123456789abcdef") - set("0a")))
    for digits in itertools.product(alphabet, repeat=8):
        name = "fleet_ref_" + "".join(digits)
        tenant = tenant_from_schema(template, name)
        if tenant is not None:
            found = name
            break
    result = reference_collision(template, "fleet")
    assert (result is not None) == (found is not None), (result, found)
    if result is not None:
        assert is_reference_schema(result, "fleet")
        assert tenant_from_schema(template, result) is not None


def test_a_long_ledger_schema_still_gives_names_that_fit() -> None:
    ledger = "l" * 63
    name = reference_schema(ledger, "f" * 64)
    assert len(name) == 63 and is_reference_schema(name, ledger)
    assert not is_reference_schema("l" * 49 + "_ref_ffffffff", "other")


# --- the DDL -------------------------------------------------------------------------------

DUMP = """\
--
-- PostgreSQL database dump
--

\\restrict AbCdEf

-- Dumped from database version 15.20
-- Dumped by pg_dump version 15.20

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: fleet_ref_0a0a0a0a; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA fleet_ref_0a0a0a0a;

CREATE FUNCTION fleet_ref_0a0a0a0a.f() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
SET lock_timeout = 0;
END $$;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE fleet_ref_0a0a0a0a.t (id integer);

\\unrestrict AbCdEf
"""


def test_local_ddl_keeps_every_setting_inside_the_transaction() -> None:
    ddl = local_ddl(DUMP)
    assert "\\restrict" not in ddl and "Dumped" not in ddl
    assert "SET statement_timeout" not in ddl and "SET LOCAL lock_timeout" not in ddl
    assert "client_encoding" not in ddl and "row_security" not in ddl
    assert "SET LOCAL check_function_bodies = false;" in ddl
    assert "SELECT pg_catalog.set_config('search_path', '', true);" in ddl
    assert "SET LOCAL default_table_access_method = heap;" in ddl
    assert "\nSET lock_timeout = 0;\nEND $$;" in ddl  # a function's body is left alone
    assert not any(line.startswith("SET ") and "LOCAL" not in line
                   for line in ddl.splitlines() if "lock_timeout" not in line)


# --- what a revision's file shows ----------------------------------------------------------


def _revision(tmp_path: Path, name: str, body: str, upgrade: object = None
              ) -> tuple[str, object, str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    module = types.SimpleNamespace(upgrade=upgrade or (lambda: None))
    return name, module, str(path)


@pytest.mark.parametrize(("body", "expected"), [
    ("op.execute('SELECT current_schema()')", "the schema it runs in"),
    ("op.execute('SET search_path TO x')", "the search path"),
    ("s = context.config.attributes['fleet_schema']", "the helper's attributes"),
    ("s = op.get_context().version_table_schema", "the version table's schema"),
    ("s = os.environ['ALEMBIC_SCHEMA']", "ALEMBIC_SCHEMA"),
    ("s = os.getenv('TENANT')", "the environment"),
    ("op.create_table('t', sa.Column('id', sa.Integer), schema='shared')", "schema="),
    ("op.execute('INSERT INTO shared.registry VALUES (1)')", "another schema's table"),
    ("op.execute('update shared.registry set x = 1')", "another schema's table"),
    ("name = sa.inspect(op.get_bind()).default_schema_name", "default schema"),
], ids=lambda v: v[:30])
def test_what_shows_a_revision_may_depend_on_the_tenant(tmp_path: Path, body: str,
                                                        expected: str) -> None:
    revision = _revision(tmp_path, "r1", "from sqlalchemy.dialects import postgresql\n" + body)
    reason = tenant_dependence([revision])
    assert reason is not None and expected in reason and "r1" in reason
    marked = _revision(tmp_path, "r2", body + "\nfleet_provision = True\n")
    assert tenant_dependence([marked]) is None


@pytest.mark.parametrize("body", [
    "from sqlalchemy.dialects import postgresql\nop.create_table('tenant', sa.Column('x'))",
    "op.execute('SELECT * FROM pg_catalog.pg_class')",
    "op.execute('SELECT count(*) FROM information_schema.tables')",
    "op.create_table('t', sa.Column('id', sa.Integer), schema=None)",
    "op.execute('INSERT INTO t (a) VALUES (1)')",
    "op.execute('CREATE VIEW v AS SELECT t.id FROM t')",
])
def test_what_does_not(tmp_path: Path, body: str) -> None:
    assert tenant_dependence([_revision(tmp_path, "r1", body)]) is None


def test_a_revision_rendering_differently_each_time_is_refused(tmp_path: Path) -> None:
    from alembic import op

    calls = iter(range(100))

    def upgrade() -> None:
        op.execute(f"INSERT INTO t VALUES ({next(calls)})")

    revision = _revision(tmp_path, "r1", "def upgrade(): ...", upgrade)
    reason = tenant_dependence([revision])
    assert reason is not None and "renders different SQL each time" in reason
    assert tenant_dependence([_revision(tmp_path, "r2", "fleet_provision = True", upgrade)]) \
        is None
    opt_out = _revision(tmp_path, "r3", "fleet_provision = False")
    assert "says fleet_provision = False" in str(tenant_dependence([opt_out]))
