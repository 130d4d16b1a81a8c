"""Finding, reading and validating fleet.toml / [tool.fleet] (files in tmp_path, no database)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alembic_fleet.config import FleetConfig, find_config_file, load_config
from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.model.targets import Database

ALEMBIC_INI = "[alembic]\nscript_location = %(here)s/migrations\n"

BASIC = """
database = "postgresql://app:s3cret@db.internal:5432/platform"
tenants = ["default", "toshiba"]

[services.auth]
path = "services/auth"
schema = "auth_{tenant}"

[services.billing]
path = "services/billing"
schema = "billing"
"""


def make_service(root: Path, rel: str, ini: str = "alembic.ini") -> Path:
    folder = root / rel
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ini).write_text(ALEMBIC_INI, encoding="utf-8")
    return folder


def write_fleet(root: Path, body: str, *, services: tuple[str, ...] = (),
                name: str = "fleet.toml") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel in services:
        make_service(root, rel)
    path = root / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def config_error(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(path, environ or {})
    return info.value


def assert_names(err: ConfigError, path: Path, key: str | None) -> None:
    """A user reading the message learns the file and the key."""
    assert str(path) in str(err)
    assert err.file == str(path)
    if key is not None:
        assert err.key == key
        assert f"key '{key}'" in str(err)
    assert exit_code(err) == 2
    assert exit_code(err) == ExitCode.USAGE


# --- a good configuration ----------------------------------------------------------------


def test_basic_config(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    cfg = parse_config(path, {})
    assert isinstance(cfg, FleetConfig)
    assert cfg.file == path
    assert cfg.root == tmp_path
    assert cfg.embedded_dir == tmp_path / ".fleet"
    assert list(cfg.services) == ["auth", "billing"]
    auth, billing = cfg.services["auth"], cfg.services["billing"]
    assert auth.path == (tmp_path / "services/auth").resolve()
    assert auth.ini_path == auth.path / "alembic.ini"
    assert auth.schema == "auth_{tenant}"
    assert auth.per_tenant
    assert not billing.per_tenant
    assert billing.schema == "billing"
    assert auth.version_table == "alembic_version"
    assert auth.alembic_ini == "alembic.ini"
    url = "postgresql://app:s3cret@db.internal:5432/platform"
    assert auth.database == billing.database == Database(url=url)
    assert not cfg.uses_embedded
    assert cfg.tenants == ("default", "toshiba")
    assert cfg.tenants_from_env is False
    assert cfg.secrets == ("s3cret",)  # services inherit the parsed top-level database


def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    cfg = parse_config(path, {})
    assert "s3cret" in cfg.secrets
    assert "secrets=" not in repr(cfg)


def test_optional_service_keys(tmp_path: Path) -> None:
    make_service(tmp_path, "svc", ini="custom.ini")
    path = write_fleet(tmp_path, """
        [services.svc]
        path = "svc"
        alembic_ini = "custom.ini"
        version_table = "svc_version"
    """)
    svc = parse_config(path, {}).services["svc"]
    assert svc.alembic_ini == "custom.ini"
    assert svc.ini_path == (tmp_path / "svc" / "custom.ini").resolve()
    assert svc.version_table == "svc_version"
    assert svc.schema == "public"  # default schema


def test_service_names_may_contain_dashes(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.user-profile]
        path = "up"
    """, services=("up",))
    assert list(parse_config(path, {}).services) == ["user-profile"]


def test_values_are_interpolated_from_the_given_environ(tmp_path: Path) -> None:
    make_service(tmp_path, "svc_dir")
    path = write_fleet(tmp_path, """
        database = "${DATABASE_URI:-embedded}"
        tenants = ["${FIRST_TENANT}", "second"]

        [services.svc]
        path = "${SVC_DIR:-nope}"
        schema = "${SVC_SCHEMA:-svc}_{tenant}"
    """)
    env = {
        "DATABASE_URI": "postgresql://u:pw123@h/db",
        "FIRST_TENANT": "first",
        "SVC_DIR": "svc_dir",
    }
    cfg = parse_config(path, env)
    svc = cfg.services["svc"]
    assert svc.path == (tmp_path / "svc_dir").resolve()
    assert svc.schema == "svc_{tenant}"
    assert svc.database == Database(url="postgresql://u:pw123@h/db")
    assert cfg.tenants == ("first", "second")
    assert cfg.secrets == ("pw123",)


def test_unset_variable_names_file_and_key(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        database = "${DATABASE_URI}"
        [services.svc]
        path = "svc"
    """, services=("svc",))
    err = config_error(path)
    assert_names(err, path, "database")
    assert "DATABASE_URI" in str(err)


# --- discovery ---------------------------------------------------------------------------


def test_discovery_walks_up_from_a_subfolder(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    deep = tmp_path / "services" / "auth" / "migrations" / "versions"
    deep.mkdir(parents=True)
    assert find_config_file(start=deep, environ={}) == path
    cfg = load_config(start=deep, environ={})
    assert cfg.file == path
    assert set(cfg.services) == {"auth", "billing"}


def test_discovery_finds_the_nearest_file(tmp_path: Path) -> None:
    write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    inner = write_fleet(tmp_path / "inner", """
        [services.only]
        path = "only"
    """, services=("only",))
    sub = tmp_path / "inner" / "sub"
    sub.mkdir()
    assert find_config_file(start=sub, environ={}) == inner
    assert list(load_config(start=sub, environ={}).services) == ["only"]


def test_discovery_uses_pyproject_tool_fleet(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [project]
        name = "platform"

        [tool.fleet]
        tenants = ["acme"]

        [tool.fleet.services.auth]
        path = "auth"
        schema = "auth_{tenant}"
    """, services=("auth",), name="pyproject.toml")
    sub = tmp_path / "auth"
    assert find_config_file(start=sub, environ={}) == path
    cfg = load_config(start=sub, environ={})
    assert cfg.file == path
    assert cfg.tenants == ("acme",)
    assert cfg.services["auth"].schema == "auth_{tenant}"


def test_discovery_skips_pyproject_without_tool_fleet(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "app"\n', encoding="utf-8")
    assert find_config_file(start=app, environ={}) == path


def test_discovery_skips_invalid_pyproject(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text("[tool.fleet\n", encoding="utf-8")
    assert find_config_file(start=app, environ={}) == path


def test_fleet_toml_wins_over_pyproject_in_the_same_folder(tmp_path: Path) -> None:
    fleet = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    (tmp_path / "pyproject.toml").write_text(
        '[tool.fleet.services.x]\npath = "x"\n', encoding="utf-8")
    assert find_config_file(start=tmp_path, environ={}) == fleet


def test_explicit_path_wins(tmp_path: Path) -> None:
    write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    other = write_fleet(tmp_path / "elsewhere", """
        [services.x]
        path = "x"
    """, services=("x",), name="custom.toml")
    env = {"FLEET_CONFIG": str(tmp_path / "fleet.toml")}
    assert find_config_file(other, start=tmp_path, environ=env) == other.resolve()
    cfg = load_config(str(other), start=tmp_path, environ=env)
    assert list(cfg.services) == ["x"]
    assert cfg.root == other.parent


def test_fleet_config_env_is_used(tmp_path: Path) -> None:
    write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    other = write_fleet(tmp_path / "elsewhere", """
        [services.x]
        path = "x"
    """, services=("x",), name="custom.toml")
    cfg = load_config(start=tmp_path, environ={"FLEET_CONFIG": str(other)})
    assert cfg.file == other.resolve()
    assert list(cfg.services) == ["x"]


def test_empty_fleet_config_env_falls_back_to_discovery(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    assert find_config_file(start=tmp_path, environ={"FLEET_CONFIG": ""}) == path


def test_explicit_pyproject_without_tool_fleet(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, '[project]\nname = "x"\n', name="pyproject.toml")
    err = config_error(path)
    assert_names(err, path, None)
    assert "[tool.fleet]" in str(err)


@pytest.mark.parametrize("how", ["explicit", "env"])
def test_missing_explicit_file(tmp_path: Path, how: str) -> None:
    missing = tmp_path / "nope" / "fleet.toml"
    with pytest.raises(ConfigError) as info:
        if how == "explicit":
            load_config(missing, start=tmp_path, environ={})
        else:
            load_config(start=tmp_path, environ={"FLEET_CONFIG": str(missing)})
    assert "not found" in str(info.value)
    assert str(missing) in str(info.value)
    assert exit_code(info.value) == 2


def test_explicit_path_that_is_a_directory(tmp_path: Path) -> None:
    write_fleet(tmp_path, BASIC, services=("services/auth", "services/billing"))
    with pytest.raises(ConfigError, match="not found"):
        find_config_file(tmp_path, environ={})


def test_no_config_anywhere(tmp_path: Path) -> None:
    start = tmp_path / "a" / "b"
    start.mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        find_config_file(start=start, environ={})
    err = info.value
    assert "fleet.toml" in str(err)
    assert str(start) in str(err)
    assert err.hint and "fleet init" in err.hint
    assert exit_code(err) == 2


# --- file-level errors -------------------------------------------------------------------


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, '[services.auth\npath = "auth"\n')
    err = config_error(path)
    assert_names(err, path, None)
    assert "not valid TOML" in str(err)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, 'tennants = ["a"]\n' + textwrap.dedent(BASIC),
                       services=("services/auth", "services/billing"))
    err = config_error(path)
    assert_names(err, path, "tennants")
    assert "unknown key" in str(err)
    assert "services" in str(err)  # lists what is allowed


def test_unknown_service_key(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "auth"
        shema = "auth_{tenant}"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.shema")
    assert "unknown key" in str(err)
    assert "schema" in str(err)


@pytest.mark.parametrize(
    "body",
    [
        'database = "embedded"\n',
        'database = "embedded"\n[services]\n',
        'services = "auth"\n',
        'services = []\n',
    ],
)
def test_missing_or_empty_services(tmp_path: Path, body: str) -> None:
    path = write_fleet(tmp_path, body)
    err = config_error(path)
    assert_names(err, path, "services")
    assert "at least one service" in str(err)


def test_service_missing_path(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        schema = "auth"
    """)
    err = config_error(path)
    assert_names(err, path, "services.auth.path")
    assert "missing" in str(err)


def test_service_that_is_not_a_table(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, 'services = { auth = "auth" }\n')
    err = config_error(path)
    assert_names(err, path, "services.auth")
    assert "table" in str(err)


@pytest.mark.parametrize("name", ["Auth", "1auth", "_auth", "au th", "auth.x"])
def test_invalid_service_name(tmp_path: Path, name: str) -> None:
    path = write_fleet(tmp_path, f'[services."{name}"]\npath = "auth"\n', services=("auth",))
    err = config_error(path)
    assert_names(err, path, f"services.{name}")
    assert "invalid service name" in str(err)


def test_path_without_alembic_ini(tmp_path: Path) -> None:
    (tmp_path / "auth").mkdir()
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "auth"
    """)
    err = config_error(path)
    assert_names(err, path, "services.auth.path")
    assert "alembic.ini" in str(err)
    assert "does not exist" in str(err)
    # 'fleet init --service auth ...' refuses a service already in the file: not the way.
    assert err.hint and "point path at the folder" in err.hint


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "no/such/folder"
    """)
    err = config_error(path)
    assert_names(err, path, "services.auth.path")
    assert "does not exist" in str(err)


def test_missing_custom_alembic_ini(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "auth"
        alembic_ini = "other.ini"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.path")
    assert "other.ini" in str(err)


@pytest.mark.parametrize(
    ("value", "key", "fragment"),
    [
        ("path = 3", "services.auth.path", "has type int"),
        ('path = "auth"\nschema = 3', "services.auth.schema", "has type int"),
        ('path = "auth"\ndatabase = 5', "services.auth.database", "has type int"),
        ('path = "auth"\nversion_table = true', "services.auth.version_table", "has type bool"),
    ],
)
def test_wrong_value_types(tmp_path: Path, value: str, key: str, fragment: str) -> None:
    path = write_fleet(tmp_path, f"[services.auth]\n{value}\n", services=("auth",))
    err = config_error(path)
    assert_names(err, path, key)
    assert fragment in str(err)
    assert "a string" in str(err)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("", "non-empty"),
        ("auth_{name}", "unknown placeholder"),
        ("auth_{tenant}_{tenant}", "more than once"),
        ('auth\\"x', "quote"),
    ],
)
def test_bad_schema_template(tmp_path: Path, schema: str, fragment: str) -> None:
    path = write_fleet(tmp_path, f"""
        tenants = ["a"]
        [services.auth]
        path = "auth"
        schema = "{schema}"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.schema")
    assert fragment in str(err)


def test_too_long_fixed_schema_names_file_and_key(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, f"""
        [services.auth]
        path = "auth"
        schema = "{'s' * 64}"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.schema")


def test_too_long_fixed_schema_is_refused_with_exit_code_2(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, f"""
        [services.auth]
        path = "auth"
        schema = "{'s' * 64}"
    """, services=("auth",))
    with pytest.raises(Exception, match="longer than 63 bytes") as info:
        parse_config(path, {})
    assert exit_code(info.value) == ExitCode.USAGE


# --- databases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("mysql://u:p@h/db", "mysql"),
        ("sqlite:///x.db", "sqlite"),
        ("postgresql+pg8000://u@h/db", "postgresql+pg8000"),
    ],
)
def test_unsupported_database_scheme(tmp_path: Path, url: str, scheme: str) -> None:
    path = write_fleet(tmp_path, f"""
        database = "{url}"
        [services.auth]
        path = "auth"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "database")
    driver = scheme.partition("+")[2]
    assert (f"unsupported driver {driver!r}" if driver
            else f"unsupported scheme {scheme!r}") in str(err)
    assert "postgresql://" in str(err)


def test_unsupported_scheme_on_a_service(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "auth"
        database = "mysql://root@h/db"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.database")
    assert "mysql" in str(err)


@pytest.mark.parametrize("url", ["not a url", "localhost:5432", "://x"])
def test_not_a_database_url(tmp_path: Path, url: str) -> None:
    path = write_fleet(tmp_path, f"""
        database = "{url}"
        [services.auth]
        path = "auth"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "database")
    assert "is not a database URL" in str(err)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@h/db",
        "postgres://u@h/db",
        "postgresql+psycopg://u@h:6543/db",
        "postgresql:///db?host=/var/run/postgresql",
    ],
)
def test_supported_database_urls(tmp_path: Path, url: str) -> None:
    path = write_fleet(tmp_path, f"""
        database = "{url}"
        [services.auth]
        path = "auth"
    """, services=("auth",))
    cfg = parse_config(path, {})
    assert cfg.services["auth"].database == Database(url=url)
    assert not cfg.services["auth"].database.is_embedded
    assert cfg.secrets == ()


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("", "postgres"),
        ('database = ""', "postgres"),
        ('database = "   "', "postgres"),
        ('database = "embedded"', "postgres"),
        ('database = "embedded:///"', "postgres"),
        ('database = "embedded:///ingestion"', "ingestion"),
        ('database = "embedded:ingestion"', "ingestion"),
        ('database = "embedded:///my-db"', "my-db"),
        ('database = "${UNSET:-}"', "postgres"),
        ('database = "${UNSET:-embedded:///fromenv}"', "fromenv"),
    ],
)
def test_embedded_database(tmp_path: Path, line: str, name: str) -> None:
    path = write_fleet(tmp_path, f"""
        {line}
        [services.auth]
        path = "auth"
    """, services=("auth",))
    cfg = parse_config(path, {})
    db = cfg.services["auth"].database
    assert db == Database(embedded_name=name)
    assert db.is_embedded
    assert db.url is None
    assert db.key == f"embedded:///{name}"
    assert cfg.uses_embedded
    assert cfg.secrets == ()


@pytest.mark.parametrize("value", ["embedded:///Bad", "embedded:///a/b", "embedded:///a b",
                                   "embedded:///1db"])
def test_invalid_embedded_database_name(tmp_path: Path, value: str) -> None:
    path = write_fleet(tmp_path, f"""
        [services.auth]
        path = "auth"
        database = "{value}"
    """, services=("auth",))
    err = config_error(path)
    assert_names(err, path, "services.auth.database")
    assert "invalid embedded database name" in str(err)


def test_service_database_inherits_and_overrides(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        database = "postgresql://main:mainpw@h/platform"

        [services.auth]
        path = "auth"

        [services.blank]
        path = "blank"
        database = ""
        schema = "blank"

        [services.ingestion]
        path = "ingestion"
        database = "embedded:///ingestion"

        [services.other]
        path = "other"
        database = "postgresql://other:otherpw@h2/other"
    """, services=("auth", "blank", "ingestion", "other"))
    cfg = parse_config(path, {})
    main = Database(url="postgresql://main:mainpw@h/platform")
    assert cfg.services["auth"].database == main
    assert cfg.services["blank"].database == main
    assert cfg.services["ingestion"].database == Database(embedded_name="ingestion")
    assert cfg.services["other"].database == Database(url="postgresql://other:otherpw@h2/other")
    assert cfg.uses_embedded
    assert "mainpw" in cfg.secrets
    assert "otherpw" in cfg.secrets


def test_password_in_url_is_collected_decoded(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.auth]
        path = "auth"
        database = "postgresql://u:p%40ss%2Fword@h/db"
    """, services=("auth",))
    assert parse_config(path, {}).secrets == ("p@ss/word",)


def test_password_from_environment_is_collected(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        database = "${DATABASE_URI}"
        [services.auth]
        path = "auth"
    """, services=("auth",))
    cfg = parse_config(path, {"DATABASE_URI": "postgresql://u:env-secret-1@h/db"})
    assert cfg.secrets == ("env-secret-1",)


def test_password_in_url_query_is_collected(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        database = "postgresql://u@h/db?password=query-secret"
        [services.auth]
        path = "auth"
    """, services=("auth",))
    assert "query-secret" in parse_config(path, {}).secrets


# --- tenants -----------------------------------------------------------------------------


def tenant_project(tmp_path: Path, tenants_line: str = 'tenants = ["default", "toshiba"]'
                   ) -> Path:
    return write_fleet(tmp_path, f"""
        {tenants_line}
        [services.auth]
        path = "auth"
        schema = "auth_{{tenant}}"
    """, services=("auth",))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("acme", ("acme",)),
        ("a b c", ("a", "b", "c")),
        ("a,b,c", ("a", "b", "c")),
        (" a , b,c  d\te\n", ("a", "b", "c", "d", "e")),
        ("a,,b", ("a", "b")),
        ("a b a", ("a", "b")),  # duplicates removed, order kept
    ],
)
def test_tenants_env_overrides_the_file(tmp_path: Path, value: str,
                                        expected: tuple[str, ...]) -> None:
    cfg = parse_config(tenant_project(tmp_path), {"TENANTS": value})
    assert cfg.tenants == expected
    assert cfg.tenants_from_env is True


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_blank_tenants_env_falls_back_to_the_file(tmp_path: Path, value: str) -> None:
    cfg = parse_config(tenant_project(tmp_path), {"TENANTS": value})
    assert cfg.tenants == ("default", "toshiba")
    assert cfg.tenants_from_env is False


def test_tenants_from_file_are_deduplicated(tmp_path: Path) -> None:
    cfg = parse_config(tenant_project(tmp_path, 'tenants = ["b", "a", "b"]'), {})
    assert cfg.tenants == ("b", "a")


def test_tenants_in_file_are_interpolated(tmp_path: Path) -> None:
    path = tenant_project(tmp_path, 'tenants = ["${T1}", "${T2:-second}"]')
    assert parse_config(path, {"T1": "first"}).tenants == ("first", "second")


@pytest.mark.parametrize(
    "bad", ['ok x\\"; drop schema public; --', "Default", "1abc", "", "a-b", "café"]
)
def test_invalid_tenant_in_file(tmp_path: Path, bad: str) -> None:
    path = tenant_project(tmp_path, f'tenants = ["good", "{bad}"]')
    err = config_error(path)
    assert_names(err, path, "tenants")
    assert "invalid tenant name" in str(err)
    assert repr(bad.replace('\\"', '"')) in str(err)
    assert "lowercase letter first" in str(err)


@pytest.mark.parametrize("bad", ["Default", "1abc", "a-b", "ok;drop", "café"])
def test_invalid_tenant_in_tenants_env(tmp_path: Path, bad: str) -> None:
    path = tenant_project(tmp_path)
    err = config_error(path, {"TENANTS": f"good {bad}"})
    assert_names(err, path, "TENANTS (environment)")
    assert "invalid tenant name" in str(err)
    assert repr(bad) in str(err)


def test_invalid_tenant_from_interpolation(tmp_path: Path) -> None:
    path = tenant_project(tmp_path, 'tenants = ["${T}"]')
    err = config_error(path, {"T": "Bad"})
    assert_names(err, path, "tenants")
    assert "'Bad'" in str(err)


@pytest.mark.parametrize("line", ['tenants = "a b"', "tenants = [1, 2]", 'tenants = ["a", 1]'])
def test_tenants_must_be_a_list_of_strings(tmp_path: Path, line: str) -> None:
    path = tenant_project(tmp_path, line)
    err = config_error(path)
    assert_names(err, path, "tenants")
    assert "list of strings" in str(err)


@pytest.mark.parametrize("line", ["", "tenants = []"])
def test_no_tenants_with_a_tenant_service(tmp_path: Path, line: str) -> None:
    path = tenant_project(tmp_path, line)
    err = config_error(path)
    assert_names(err, path, "tenants")
    assert "no tenants" in str(err)
    assert "TENANTS" in str(err)


def test_no_tenants_is_fine_without_a_tenant_service(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.billing]
        path = "billing"
        schema = "billing"
    """, services=("billing",))
    cfg = parse_config(path, {})
    assert cfg.tenants == ()
    assert cfg.tenants_from_env is False


def test_tenants_env_rescues_a_file_without_tenants(tmp_path: Path) -> None:
    cfg = parse_config(tenant_project(tmp_path, ""), {"TENANTS": "x,y"})
    assert cfg.tenants == ("x", "y")
    assert cfg.tenants_from_env


def test_tenant_making_a_too_long_schema_in_tenants_env(tmp_path: Path) -> None:
    path = tenant_project(tmp_path)
    long_name = "t" * 70  # a valid tenant name, but auth_<it> is longer than 63 bytes
    err = config_error(path, {"TENANTS": f"ok {long_name}"})
    assert_names(err, path, "TENANTS (environment)")
    assert "longer than 63 bytes" in str(err)
    assert "'auth'" in str(err)  # names the service


def test_tenant_making_a_too_long_schema_in_file(tmp_path: Path) -> None:
    path = tenant_project(tmp_path, f'tenants = ["{"t" * 59}"]')  # auth_ + 59 = 64 bytes
    err = config_error(path)
    assert_names(err, path, "tenants")
    assert "longer than 63 bytes" in str(err)


def test_tenant_making_exactly_63_bytes_is_fine(tmp_path: Path) -> None:
    name = "t" * 58
    cfg = parse_config(tenant_project(tmp_path, f'tenants = ["{name}"]'), {})
    assert cfg.services["auth"].schema_for(name) == "auth_" + name


def test_load_config_reads_environ_not_os_environ(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTS", "from_os")
    cfg = load_config(tenant_project(tmp_path), environ={})
    assert cfg.tenants == ("default", "toshiba")


# --- values from the environment where a user would expect them --------------------------


def test_python_is_interpolated(tmp_path: Path) -> None:
    # python = "${AUTH_PYTHON:-fleet}" lets CI or an image without uv switch a service's
    # interpreter off; it was taken literally (".../${AUTH_PYTHON:-fleet} does not exist").
    folder = make_service(tmp_path, "svc")
    (folder / "bin").mkdir()
    (folder / "bin" / "py").write_text("")
    path = write_fleet(tmp_path, """
        [services.svc]
        path = "svc"
        python = "${SVC_PYTHON:-fleet}"

        [services.other]
        path = "svc"
        schema = "other"
        python = ["${UV:-uv}", "run", "--project", "${PROJECT:-.}", "python"]
    """)
    assert parse_config(path, {}).services["svc"].python is None
    chosen = parse_config(path, {"SVC_PYTHON": "bin/py"}).services["svc"].python
    assert chosen == (str((folder / "bin" / "py").absolute()),)
    assert parse_config(path, {"SVC_PYTHON": ""}).services["svc"].python is None  # default
    assert parse_config(path, {"PROJECT": "app"}).services["other"].python == (
        "uv", "run", "--project", "app", "python")
    err = config_error(path, {"SVC_PYTHON": "nowhere/py"})
    assert_names(err, path, "services.svc.python")
    assert "nowhere/py" in str(err)
    # A word of the command empty in this environment names the word and the variable
    # (it said only "must be a path, a command or 'fleet'").
    path.write_text(path.read_text().replace("${UV:-uv}", "${UV}"))
    err = config_error(path, {"UV": ""})
    assert_names(err, path, "services.other.python[0]")
    assert "${UV}" in str(err) and "empty" in str(err)


def test_a_bad_url_from_a_variable_names_the_variable(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        database = "${DATABASE_URI}"
        [services.svc]
        path = "svc"
    """, services=("svc",))
    err = config_error(path, {"DATABASE_URI": "postgres//bad"})
    assert_names(err, path, "database")
    assert "${DATABASE_URI}" in str(err)


def test_a_missing_service_folder_points_at_its_path(tmp_path: Path) -> None:
    path = write_fleet(tmp_path, """
        [services.workflow]
        path = "services/workflw"
    """)
    err = config_error(path)
    assert_names(err, path, "services.workflow.path")
    assert "a typo" in (err.hint or "") and "fleet init" not in (err.hint or "")
