"""The ``search_path`` and ``baseline`` keys: validated at load, plain values in Service."""

from __future__ import annotations

from pathlib import Path

import pytest

from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError
from alembic_fleet.exit_codes import ExitCode, exit_code
from alembic_fleet.model.identifiers import search_path_value
from alembic_fleet.model.targets import Baseline
from tests.unit.test_config import assert_names, config_error, write_fleet

SERVICES = """
[services.auth]
path = "services/auth"
schema = "auth_{tenant}"
{auth}

[services.billing]
path = "services/billing"
schema = "billing"
{billing}
"""


def fleet(root: Path, top: str = "", auth: str = "", billing: str = "") -> Path:
    body = ('database = "postgresql://u@h/db"\ntenants = ["default"]\n' + top + "\n"
            + SERVICES.replace("{auth}", auth).replace("{billing}", billing))
    return write_fleet(root, body, services=("services/auth", "services/billing"))


def test_default_is_no_shared_schema_and_no_baseline(tmp_path: Path) -> None:
    config = parse_config(fleet(tmp_path), {})
    assert config.services["auth"].search_path == ()
    assert config.services["auth"].baseline is None


def test_top_level_is_the_default_and_a_service_replaces_it(tmp_path: Path) -> None:
    config = parse_config(fleet(tmp_path, 'search_path = ["extensions", "public"]',
                                billing="search_path = []"), {})
    assert config.services["auth"].search_path == ("extensions", "public")
    assert config.services["billing"].search_path == ()


def test_service_key_interpolated_and_deduplicated(tmp_path: Path) -> None:
    config = parse_config(fleet(tmp_path, auth='search_path = ["${EXT:-ext}", "ext"]'), {})
    assert config.services["auth"].search_path == ("ext",)


@pytest.mark.parametrize(("value", "key", "says"), [
    ('"extensions"', "services.auth.search_path", "has type str"),
    ('["Extensions"]', "services.auth.search_path[0]", "not a schema name"),
    ('["ok", "a;b"]', "services.auth.search_path[1]", "not a schema name"),
    ("[1]", "services.auth.search_path[0]", "not a schema name"),
    ('["pg_catalog"]', "services.auth.search_path[0]", "system schema"),
    ('["information_schema"]', "services.auth.search_path[0]", "system schema"),
    ('["fleet"]', "services.auth.search_path", "ledger schema"),
    (f'["{"x" * 64}"]', "services.auth.search_path[0]", "longer than 63"),
])
def test_bad_search_path_names_file_key_and_expected(tmp_path: Path, value: str, key: str,
                                                     says: str) -> None:
    path = fleet(tmp_path, auth=f"search_path = {value}")
    err = config_error(path)
    assert_names(err, path, key)
    assert says in err.message
    assert "search_path = [" in (err.expected or "") or "shared schemas" in (err.expected or "")
    assert exit_code(err) == ExitCode.USAGE


def test_top_level_errors_name_the_top_level_key(tmp_path: Path) -> None:
    path = fleet(tmp_path, 'search_path = "x"')
    assert_names(config_error(path), path, "search_path")
    path = fleet(tmp_path / "b", 'search_path = ["fleet"]')
    assert_names(config_error(path), path, "search_path")


def test_own_schema_refused_in_the_service_key_dropped_from_the_default(tmp_path: Path) -> None:
    path = fleet(tmp_path, billing='search_path = ["billing"]')
    err = config_error(path)
    assert_names(err, path, "services.billing.search_path")
    assert "own schema" in err.message
    config = parse_config(fleet(tmp_path / "b", 'search_path = ["billing", "ext"]'), {})
    assert config.services["billing"].search_path == ("ext",)
    assert config.services["auth"].search_path == ("billing", "ext")


def test_unknown_key_is_still_an_error(tmp_path: Path) -> None:
    path = fleet(tmp_path, auth='search_paths = ["x"]')
    assert_names(config_error(path), path, "services.auth.search_paths")


def test_baseline_sql_file_relative_to_the_service(tmp_path: Path) -> None:
    path = fleet(tmp_path, auth='baseline = "db/baseline.sql"')
    (tmp_path / "services/auth/db").mkdir()
    (tmp_path / "services/auth/db/baseline.sql").write_text("CREATE TABLE t (id int);")
    baseline = parse_config(path, {}).services["auth"].baseline
    assert baseline == Baseline("sql", path=(tmp_path / "services/auth/db/baseline.sql")
                                .resolve(), folder=(tmp_path / "services/auth").resolve())


def test_baseline_callable(tmp_path: Path) -> None:
    path = fleet(tmp_path, billing='baseline = "billing_app.db:create_all"')
    baseline = parse_config(path, {}).services["billing"].baseline
    assert baseline is not None
    assert (baseline.kind, baseline.target) == ("callable", "billing_app.db:create_all")
    assert baseline.spec == "billing_app.db:create_all"


@pytest.mark.parametrize(("value", "says"), [
    ('"missing.sql"', "does not exist"),
    ('""', "is empty"),
    ("3", "has type int"),
    ('"pkg.mod:"', "does not exist"),
])
def test_bad_baseline(tmp_path: Path, value: str, says: str) -> None:
    path = fleet(tmp_path, auth=f"baseline = {value}")
    err = config_error(path)
    assert_names(err, path, "services.auth.baseline")
    assert says in err.message
    assert exit_code(err) == ExitCode.USAGE


def test_search_path_value_quotes_and_keeps_the_target_first() -> None:
    assert search_path_value("auth_x", ("extensions", "public")) == \
        '"auth_x", "extensions", "public"'
    assert search_path_value("a", ("a", "b")) == '"a", "b"'
    assert search_path_value('we"ird', ()) == '"we""ird"'


def test_config_error_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_config(fleet(tmp_path, 'search_path = ["pg_temp"]'), {})


def test_revision_words_come_from_strings_not_docstrings(tmp_path: Path) -> None:
    from alembic_fleet.shared_schemas import string_words

    path = tmp_path / "r.py"
    path.write_text('"""create Ledger tables"""\n'
                    "def upgrade():\n"
                    '    """add Docs"""\n'
                    '    op.add_column("Items", sa.Column("x", sa.Integer()))\n'
                    '    op.execute("UPDATE orders SET n = 1")  # comment_table\n')
    words = string_words(str(path))
    assert {"Items", "items", "orders", "x", "UPDATE"} <= words
    assert not {"ledger", "Ledger", "docs", "comment_table", "add_column"} & words
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    assert string_words(str(broken)) == frozenset()
