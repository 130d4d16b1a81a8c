"""Tenant sources: the list, [tenants.NAME] tables, a tenants file, a registry query, and
recording a tenant where the source lives (files in tmp_path; the registry query is tested
on PostgreSQL in tests/integration/test_tenant_sources_db.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from alembic_fleet.config import TenantQuery, TenantSource
from alembic_fleet.config.loader import parse_config, priority_order
from alembic_fleet.config.tenant_sources import forget_tenant, record_tenant
from alembic_fleet.exceptions import ConfigError, FleetError, InvalidTenantError, UsageError
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.schedule import execution_order
from alembic_fleet.model.status import Step
from alembic_fleet.model.targets import Database, Service, targets_for

MAIN_DB = "postgresql://app:s3cret@db.internal/platform"
TOSHIBA_DB = "postgresql://tosh:t0sh1ba@toshiba.internal/platform"
SERVICES = """
[services.auth]
path = "auth"
schema = "auth_{tenant}"

[services.billing]
path = "billing"
schema = "billing"
"""


def project(tmp_path: Path, tenants: str, *, name: str = "fleet.toml",
            prefix: str = "") -> Path:
    """A project with a per-tenant and a single-schema service; ``tenants`` is TOML text."""
    for service in ("auth", "billing"):
        (tmp_path / service).mkdir(exist_ok=True)
        (tmp_path / service / "alembic.ini").write_text("[alembic]\n", encoding="utf-8")
    body = f'database = "{MAIN_DB}"\n' + textwrap.dedent(tenants).strip() + "\n" + SERVICES
    if prefix:  # pyproject.toml: every table under [tool.fleet]
        body = body.replace("[services.", f"[{prefix}.services.").replace(
            "[tenants.", f"[{prefix}.tenants.")
        body = f'[project]\nname = "platform"\n\n[{prefix}]\n' + body
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(path, environ or {})
    assert info.value.file == str(path)
    return info.value


# --- the list and [tenants.NAME] tables ------------------------------------------------------


def test_list_source_is_unchanged(tmp_path: Path) -> None:
    cfg = parse_config(project(tmp_path, 'tenants = ["default", "toshiba"]'), {})
    assert cfg.tenants == ("default", "toshiba")
    assert cfg.tenant_source == TenantSource("list", cfg.file)
    assert cfg.tenant_query is None
    assert cfg.tenant_databases == {}
    assert cfg.priority == ()


def test_table_form_with_attributes(tmp_path: Path) -> None:
    path = project(tmp_path, """
        [tenants.default]

        [tenants.toshiba]
        database = "${TOSHIBA_DATABASE_URI}"
        priority = 10

        [tenants.acme]
        priority = -1
    """)
    cfg = parse_config(path, {"TOSHIBA_DATABASE_URI": TOSHIBA_DB})
    assert cfg.tenants == ("default", "toshiba", "acme")
    assert cfg.tenant_source.kind == "list"
    assert cfg.tenant_databases == {"toshiba": Database(url=TOSHIBA_DB)}
    assert cfg.tenant_priorities == {"toshiba": 10, "acme": -1}
    assert cfg.priority == ("toshiba",)  # then default, acme: the plain order
    assert set(cfg.secrets) == {"s3cret", "t0sh1ba"}  # the tenant's password is masked too


def test_table_form_may_name_a_tenant_file_or_query(tmp_path: Path) -> None:
    """Value types decide the form: [tenants.file] is a tenant, not a file source."""
    cfg = parse_config(project(tmp_path, "[tenants.file]\n[tenants.query]\n"), {})
    assert cfg.tenants == ("file", "query")
    assert cfg.tenant_source.kind == "list"


def test_inline_table_form(tmp_path: Path) -> None:
    cfg = parse_config(project(tmp_path, "tenants = { default = {}, b = { priority = 3 } }"), {})
    assert cfg.tenants == ("default", "b")
    assert cfg.priority == ("b",)


def test_empty_tenant_database_means_the_services_database(tmp_path: Path) -> None:
    path = project(tmp_path, '[tenants.toshiba]\ndatabase = "${TOSHIBA_DATABASE_URI:-}"\n')
    cfg = parse_config(path, {})
    assert cfg.tenant_databases == {}
    assert targets_for(list(cfg.services.values()), ["toshiba"],
                       cfg.tenant_databases)[0].database == Database(url=MAIN_DB)


def test_embedded_tenant_database(tmp_path: Path) -> None:
    path = project(tmp_path, '[tenants.toshiba]\ndatabase = "embedded:///toshiba"\n')
    assert parse_config(path, {}).tenant_databases == {
        "toshiba": Database(embedded_name="toshiba")}


def test_tenant_attributes_apply_to_a_list(tmp_path: Path) -> None:
    path = project(tmp_path, f"""
        tenants = ["default", "toshiba"]
        [tenant_attributes.toshiba]
        database = "{TOSHIBA_DB}"
        priority = 5
        [tenant_attributes.later]
        priority = 1
    """)
    cfg = parse_config(path, {})
    assert cfg.tenants == ("default", "toshiba")
    assert cfg.tenant_databases == {"toshiba": Database(url=TOSHIBA_DB)}
    assert cfg.priority == ("toshiba",)
    assert cfg.tenant_priorities == {"toshiba": 5, "later": 1}  # kept for a later tenant


def test_tenants_env_overrides_every_form_and_attributes_still_apply(tmp_path: Path) -> None:
    path = project(tmp_path, f"""
        [tenants.default]
        [tenants.toshiba]
        database = "{TOSHIBA_DB}"
        priority = 10
    """)
    cfg = parse_config(path, {"TENANTS": "acme toshiba"})
    assert cfg.tenants == ("acme", "toshiba")
    assert cfg.tenants_from_env
    assert cfg.tenant_databases == {"toshiba": Database(url=TOSHIBA_DB)}
    assert cfg.priority == ("toshiba",)
    targets = targets_for(list(cfg.services.values()), list(cfg.tenants), cfg.tenant_databases)
    assert [(t.label, t.database.url) for t in targets] == [
        ("auth/auth_acme", MAIN_DB), ("auth/auth_toshiba", TOSHIBA_DB),
        ("billing/billing", MAIN_DB)]


# --- priority ------------------------------------------------------------------------------


def test_top_level_priority_comes_before_attributes(tmp_path: Path) -> None:
    path = project(tmp_path, """
        priority = ["default", "unknown"]
        [tenants.acme]
        [tenants.default]
        [tenants.toshiba]
        priority = 10
    """)
    assert parse_config(path, {}).priority == ("default", "toshiba")


@pytest.mark.parametrize(("tenants", "listed", "attributes", "expected"), [
    (["a", "b", "c"], [], {}, ()),
    (["a", "b", "c"], ["c"], {}, ("c",)),
    (["a", "b", "c"], ["a"], {}, ()),  # already first: nothing to reorder
    (["a", "b", "c"], [], {"c": 2, "b": 1}, ("c", "b")),
    (["a", "b", "c"], [], {"a": -1}, ("b", "c")),  # then a: negative runs last
    (["a", "b", "c"], [], {"b": 1, "c": 1}, ("b", "c")),  # ties keep the tenant order
    (["a", "b"], ["zz"], {"zz": 9}, ()),
])
def test_priority_order(tenants: list[str], listed: list[str], attributes: dict[str, int],
                        expected: tuple[str, ...]) -> None:
    assert priority_order(tenants, listed, attributes) == expected


def test_priority_attributes_drive_execution_order() -> None:
    service = Service("auth", Path("auth"), "auth_{tenant}", Database(url=MAIN_DB))
    tenants = ["a", "b", "c"]
    # execution_order reads only each step's target.
    steps = cast(list[Step], [SimpleNamespace(target=t) for t in targets_for([service], tenants)])
    priority = priority_order(tenants, [], {"c": 1, "a": -1})
    order = execution_order(steps, [service], tenants, priority)
    assert [steps[i].target.tenant for i in order] == ["c", "b", "a"]


# --- targets_for ---------------------------------------------------------------------------


def test_targets_for_places_per_tenant_schemas_on_the_tenants_database() -> None:
    main, own = Database(url=MAIN_DB), Database(url=TOSHIBA_DB)
    auth = Service("auth", Path("auth"), "auth_{tenant}", main)
    billing = Service("billing", Path("billing"), "billing", main)
    targets = targets_for([auth, billing], ["default", "toshiba"], {"toshiba": own})
    assert [(t.label, t.database) for t in targets] == [
        ("auth/auth_default", main), ("auth/auth_toshiba", own), ("billing/billing", main)]
    assert targets_for([auth, billing], ["default"]) == targets_for([auth, billing],
                                                                    ["default"], {})


# --- the tenants file ----------------------------------------------------------------------


def test_file_source(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tenants.txt").write_text(
        "# tenants of the platform\n\ndefault\n  toshiba   # big customer\nacme\ndefault\n",
        encoding="utf-8")
    cfg = parse_config(project(tmp_path, 'tenants = { file = "conf/tenants.txt" }'), {})
    assert cfg.tenants == ("default", "toshiba", "acme")
    assert cfg.tenant_source == TenantSource("file", (tmp_path / "conf/tenants.txt").resolve())
    assert cfg.tenant_source.where == "tenants.txt"


def test_file_source_with_attributes(tmp_path: Path) -> None:
    (tmp_path / "tenants.txt").write_text("default\ntoshiba\n", encoding="utf-8")
    path = project(tmp_path, f"""
        tenants = {{ file = "tenants.txt" }}
        [tenant_attributes.toshiba]
        database = "{TOSHIBA_DB}"
    """)
    assert parse_config(path, {}).tenant_databases == {"toshiba": Database(url=TOSHIBA_DB)}


def test_missing_tenants_file_names_the_file(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = { file = "tenants.txt" }')
    err = error(path)
    assert err.key == "tenants.file"
    assert str(tmp_path / "tenants.txt") in str(err)
    assert "does not exist" in str(err)


def test_tenants_env_needs_no_tenants_file(tmp_path: Path) -> None:
    cfg = parse_config(project(tmp_path, 'tenants = { file = "missing.txt" }'), {"TENANTS": "a"})
    assert cfg.tenants == ("a",)
    assert cfg.tenant_source.kind == "file"


@pytest.mark.parametrize("bad", ["Default", "a-b", "1abc", "x y"])
def test_invalid_name_in_tenants_file(tmp_path: Path, bad: str) -> None:
    (tmp_path / "tenants.txt").write_text(f"good\n# note\n{bad}\n", encoding="utf-8")
    err = error(project(tmp_path, 'tenants = { file = "tenants.txt" }'))
    assert err.key == "tenants.file"
    assert "line 3" in str(err) and repr(bad) in str(err)
    assert "tenants.txt" in str(err)


def test_empty_tenants_file_with_a_tenant_service(tmp_path: Path) -> None:
    (tmp_path / "tenants.txt").write_text("# nobody yet\n", encoding="utf-8")
    err = error(project(tmp_path, 'tenants = { file = "tenants.txt" }'))
    assert "no tenants" in str(err)


# --- the registry query (loader side) -------------------------------------------------------


def test_query_source_is_kept_not_run(tmp_path: Path) -> None:
    path = project(tmp_path, """
        tenants = { query = "SELECT slug FROM public.tenants WHERE active", \
database = "${REGISTRY_URL:-}", insert = "INSERT INTO public.tenants (slug) VALUES (:tenant)" }
    """)
    cfg = parse_config(path, {"REGISTRY_URL": "postgresql://reg:r3g@registry/tenants"})
    assert cfg.tenants == ()  # resolved by the commands, not by the loader
    assert cfg.tenant_source == TenantSource("query")
    assert cfg.tenant_source.where == "the tenant registry query"
    assert cfg.tenant_query == TenantQuery(
        "SELECT slug FROM public.tenants WHERE active",
        Database(url="postgresql://reg:r3g@registry/tenants"),
        "INSERT INTO public.tenants (slug) VALUES (:tenant)", None)
    assert "r3g" in cfg.secrets


def test_query_database_defaults_to_the_top_level_database(tmp_path: Path) -> None:
    cfg = parse_config(project(tmp_path, 'tenants = { query = "SELECT 1" }'), {})
    assert cfg.tenant_query is not None
    assert cfg.tenant_query.database == Database(url=MAIN_DB)


def test_with_tenants_validates_and_recomputes_priority(tmp_path: Path) -> None:
    path = project(tmp_path, """
        tenants = { query = "SELECT slug FROM t" }
        priority = ["b"]
        [tenant_attributes.c]
        priority = 1
    """)
    cfg = parse_config(path, {})
    resolved = cfg.with_tenants(["a", "b", "c", "a"])
    assert resolved.tenants == ("a", "b", "c")
    assert resolved.priority == ("b", "c")
    with pytest.raises(ConfigError, match="longer than 63 bytes"):
        cfg.with_tenants(["t" * 60])
    with pytest.raises(ConfigError, match="invalid tenant name 'Bad'"):
        cfg.with_tenants(["Bad"])


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("tenants", "key", "fragment"), [
    ('tenants = "a b"', "tenants", "list of strings"),
    ("tenants = 3", "tenants", "list of strings"),
    ('tenants = { fil = "t.txt" }', "tenants.fil", "unknown key"),
    ('tenants = { file = "t.txt", database = "x" }', "tenants.database", "unknown key"),
    ('tenants = { query = "SELECT 1", databse = "x" }', "tenants.databse", "unknown key"),
    ('tenants = { file = "t.txt", query = "SELECT 1" }', "tenants", "both"),
    ('tenants = { file = "" }', "tenants.file", "is empty"),
    ("tenants = { file = 3 }", "tenants.file", "has type int"),
    ('tenants = { query = "  " }', "tenants.query", "is empty"),
    ('tenants = { query = "SELECT 1", insert = "INSERT INTO t VALUES (1)" }',
     "tenants.insert", ":tenant"),
    ('tenants = { query = "SELECT 1", database = "mysql://x/y" }', "tenants.database",
     "unsupported scheme"),
    ('tenants = { file = "t.txt", toshiba = {} }', "tenants.toshiba", "unknown key"),
    ("[tenants.toshiba]\ndatabse = 'x'", "tenants.toshiba.databse", "unknown key"),
    ("[tenants.Toshiba]", "tenants.Toshiba", "invalid tenant name"),
    ("[tenants.toshiba]\npriority = '10'", "tenants.toshiba.priority", "invalid value"),
    ("[tenants.toshiba]\npriority = 1.5", "tenants.toshiba.priority", "invalid value"),
    ("[tenants.toshiba]\npriority = true", "tenants.toshiba.priority", "invalid value"),
    ("[tenants.toshiba]\ndatabase = 5", "tenants.toshiba.database", "has type int"),
    ("[tenants.toshiba]\ndatabase = 'nope'", "tenants.toshiba.database", "database URL"),
    ("[tenants.a]\n[tenant_attributes.a]\npriority = 1", "tenant_attributes", "combined"),
    ('tenants = ["a"]\ntenant_attributes = { a = 1 }', "tenant_attributes", "table of tables"),
    ('tenants = ["a"]\n[tenant_attributes.a]\ncolour = 1', "tenant_attributes.a.colour",
     "unknown key"),
    ('tenants = ["a"]\n[tenant_attributes.a-b]\npriority = 1', "tenant_attributes.a-b",
     "invalid tenant name"),
])
def test_invalid_tenant_configuration(tmp_path: Path, tenants: str, key: str,
                                      fragment: str) -> None:
    err = error(project(tmp_path, tenants))
    assert err.key == key
    assert fragment in str(err)
    assert err.expected
    assert exit_code(err) == 2


def test_shape_is_validated_even_when_tenants_env_overrides(tmp_path: Path) -> None:
    err = error(project(tmp_path, "[tenants.toshiba]\npriority = 'high'"), {"TENANTS": "a"})
    assert err.key == "tenants.toshiba.priority"


# --- recording in fleet.toml / pyproject.toml ----------------------------------------------


def test_record_in_a_list_keeps_comments_and_is_idempotent(tmp_path: Path) -> None:
    path = project(tmp_path, """
        # who we serve
        tenants = [
            "default",  # always first
            "toshiba",
        ]
    """)
    cfg = parse_config(path, {})
    assert record_tenant(cfg, "acme") == "fleet.toml"
    after = path.read_text(encoding="utf-8")
    assert '"default",  # always first' in after and "# who we serve" in after
    assert parse_config(path, {}).tenants == ("default", "toshiba", "acme")
    assert record_tenant(parse_config(path, {}), "acme") == "fleet.toml"
    assert path.read_text(encoding="utf-8") == after
    assert after.replace('    "acme",\n', "") == (
        f'database = "{MAIN_DB}"\n' + textwrap.dedent("""
        # who we serve
        tenants = [
            "default",  # always first
            "toshiba",
        ]
        """).strip() + "\n" + SERVICES)


def test_many_names_are_recorded_in_one_edit_in_order_once(tmp_path: Path) -> None:
    """``tenants add a b c``: one read and one write of the source for all of them; names
    already there and repeated names are written once, in the order given."""
    from alembic_fleet.config.tenant_sources import record_tenants

    path = project(tmp_path, 'tenants = ["default"]  # keep me')
    assert record_tenants(parse_config(path, {}), ["b", "a", "default", "b", "c"]) == \
        "fleet.toml"
    assert parse_config(path, {}).tenants == ("default", "b", "a", "c")
    assert "# keep me" in path.read_text(encoding="utf-8")
    (tmp_path / "tables").mkdir()
    tables = project(tmp_path / "tables", "[tenants.default]\n")
    record_tenants(parse_config(tables, {}), ["x", "y"])
    assert parse_config(tables, {}).tenants == ("default", "x", "y")
    listed = tmp_path / "listed"
    listed.mkdir()
    names = project(listed, 'tenants = { file = "tenants.txt" }')
    (listed / "tenants.txt").write_text("# ours\ndefault\n", encoding="utf-8")
    record_tenants(parse_config(names, {}), ["p", "default", "q"])
    assert (listed / "tenants.txt").read_text(encoding="utf-8") == "# ours\ndefault\np\nq\n"


def test_many_names_with_one_already_recorded_through_a_variable(tmp_path: Path) -> None:
    """``record_tenants`` does for each name what ``record_tenant`` does: a name that a
    ``${VAR}`` entry stands for counts as recorded, and the other names are written without
    an error claiming that someone else changed the file."""
    from alembic_fleet.config.tenant_sources import record_tenants

    path = project(tmp_path, 'tenants = ["${FIRST}", "b"]')
    assert record_tenants(parse_config(path, {"FIRST": "a"}), ["a", "c"]) == "fleet.toml"
    assert 'tenants = ["${FIRST}", "b", "c"]' in path.read_text(encoding="utf-8")
    assert parse_config(path, {"FIRST": "a"}).tenants == ("a", "b", "c")


def test_a_read_only_configuration_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["default"]')
    before = path.read_text(encoding="utf-8")
    path.chmod(0o444)
    with pytest.raises(FleetError, match="read-only"):
        record_tenant(parse_config(path, {}), "acme")
    assert path.read_text(encoding="utf-8") == before
    assert oct(path.stat().st_mode & 0o777) == oct(0o444)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_forget_from_a_list(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["default", "toshiba", "acme"]  # keep me')
    forget_tenant(parse_config(path, {}), "toshiba")
    assert 'tenants = ["default", "acme"]  # keep me' in path.read_text(encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    forget_tenant(parse_config(path, {}), "toshiba")
    assert path.read_text(encoding="utf-8") == before


def test_record_interpolated_entry_counts_as_recorded(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["${FIRST}", "b"]')
    cfg = parse_config(path, {"FIRST": "a"})
    before = path.read_text(encoding="utf-8")
    record_tenant(cfg, "a")
    assert path.read_text(encoding="utf-8") == before
    with pytest.raises(UsageError, match="reference"):
        forget_tenant(cfg, "a")


def test_record_without_a_tenants_key(tmp_path: Path) -> None:
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "alembic.ini").write_text("[alembic]\n", encoding="utf-8")
    path = tmp_path / "fleet.toml"
    path.write_text('# config\n[services.billing]\npath = "billing"\n', encoding="utf-8")
    record_tenant(parse_config(path, {}), "acme")
    assert parse_config(path, {}).tenants == ("acme",)
    assert path.read_text(encoding="utf-8").startswith('# config\ntenants = ["acme"]\n')


def test_record_in_the_table_form(tmp_path: Path) -> None:
    path = project(tmp_path, f"""
        [tenants.default]

        [tenants.toshiba]  # on its own server
        database = "{TOSHIBA_DB}"
    """)
    record_tenant(parse_config(path, {}), "acme")
    text_after = path.read_text(encoding="utf-8")
    assert "[tenants.toshiba]  # on its own server" in text_after
    assert "[tenants.acme]\n\n[services.auth]" in text_after
    cfg = parse_config(path, {})
    assert cfg.tenants == ("default", "toshiba", "acme")
    forget_tenant(cfg, "toshiba")
    cfg = parse_config(path, {})
    assert cfg.tenants == ("default", "acme")
    assert cfg.tenant_databases == {}


def test_record_in_the_inline_table_form(tmp_path: Path) -> None:
    path = project(tmp_path, "tenants = { default = {} }")
    record_tenant(parse_config(path, {}), "acme")
    assert "tenants = { default = {}, acme = {}" in path.read_text(encoding="utf-8")
    assert parse_config(path, {}).tenants == ("default", "acme")


def test_record_in_pyproject(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["default"]  # ours', name="pyproject.toml",
                   prefix="tool.fleet")
    cfg = parse_config(path, {})
    assert record_tenant(cfg, "acme") == "pyproject.toml [tool.fleet]"
    assert 'tenants = ["default", "acme"]  # ours' in path.read_text(encoding="utf-8")
    assert parse_config(path, {}).tenants == ("default", "acme")


def test_record_refuses_a_name_the_loader_would_refuse(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["default"]')
    before = path.read_text(encoding="utf-8")
    cfg = parse_config(path, {})
    with pytest.raises(InvalidTenantError):
        record_tenant(cfg, "Bad-Name")
    with pytest.raises(InvalidTenantError, match="longer than 63"):
        record_tenant(cfg, "t" * 60)
    assert path.read_text(encoding="utf-8") == before


def test_record_writes_the_source_even_when_tenants_env_is_set(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = ["default"]')
    cfg = parse_config(path, {"TENANTS": "other"})
    record_tenant(cfg, "acme")
    assert parse_config(path, {}).tenants == ("default", "acme")


# --- recording in a tenants file -----------------------------------------------------------


def test_record_and_forget_in_a_tenants_file(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants.txt"
    tenants.write_text("# customers\ndefault\ntoshiba  # big", encoding="utf-8")
    path = project(tmp_path, 'tenants = { file = "tenants.txt" }')
    assert record_tenant(parse_config(path, {}), "acme") == "tenants.txt"
    assert tenants.read_text(encoding="utf-8") == "# customers\ndefault\ntoshiba  # big\nacme\n"
    record_tenant(parse_config(path, {}), "acme")
    assert tenants.read_text(encoding="utf-8").count("acme") == 1
    assert forget_tenant(parse_config(path, {}), "toshiba") == "tenants.txt"
    assert tenants.read_text(encoding="utf-8") == "# customers\ndefault\nacme\n"
    forget_tenant(parse_config(path, {}), "toshiba")
    assert parse_config(path, {}).tenants == ("default", "acme")


def test_record_creates_a_missing_tenants_file(tmp_path: Path) -> None:
    path = project(tmp_path, 'tenants = { file = "tenants.txt" }')
    cfg = parse_config(path, {"TENANTS": "acme"})
    record_tenant(cfg, "acme")
    assert (tmp_path / "tenants.txt").read_text(encoding="utf-8") == "acme\n"
