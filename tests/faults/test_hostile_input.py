"""Property-based: any tenant name or configuration value is either accepted and quoted
correctly, or rejected with exit code 2; nothing else happens."""

from __future__ import annotations

import os
import re
import string
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alembic_fleet.cli import main
from alembic_fleet.config.loader import parse_config
from alembic_fleet.exceptions import ConfigError, InvalidTenantError
from alembic_fleet.exit_codes import exit_code
from alembic_fleet.model.identifiers import TENANT_PATTERN, quote_ident, render_schema

names = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=string.ascii_lowercase + string.digits + "_\"'; -$", max_size=70),
    st.from_regex(TENANT_PATTERN, fullmatch=True).filter(lambda s: len(s) < 70),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(names)
def test_tenant_names_are_validated_before_anything(name: str) -> None:
    try:
        schema = render_schema("auth_{tenant}", name)
    except InvalidTenantError:
        assert not TENANT_PATTERN.fullmatch(name) or len(("auth_" + name).encode()) > 63
        return
    assert TENANT_PATTERN.fullmatch(name)
    assert schema == f"auth_{name}" and len(schema.encode()) <= 63


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(min_size=1, max_size=63).filter(
    lambda s: "\x00" not in s and len(s.encode()) <= 63
    # names PostgreSQL itself owns or reserves
    and s not in ("public", "information_schema") and not s.startswith("pg_")))
def test_quoted_identifiers_reach_postgres_unchanged(server_url: str, name: str) -> None:
    """Whatever the characters, the quoted name creates exactly that schema."""
    with psycopg.connect(server_url) as conn:
        conn.execute(f"CREATE SCHEMA {quote_ident(name)}")
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                             (name,)).fetchone()[0]
        conn.rollback()
    assert found == 1


def _project(tmp_path: Path) -> Path:
    (tmp_path / "svc").mkdir(exist_ok=True)
    (tmp_path / "svc" / "alembic.ini").write_text("[alembic]\nscript_location = m\n")
    return tmp_path


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=True),
                       st.booleans(), st.lists(st.text(max_size=5), max_size=3)))
@pytest.mark.parametrize("key", ["jobs", "retries", "lock_timeout", "ledger", "ledger_schema",
                                 "priority"])
def test_config_values_are_accepted_or_rejected_cleanly(tmp_path: Path, key: str,
                                                        value: object) -> None:
    root = _project(tmp_path)
    rendered = repr(value).replace("'", '"') if isinstance(value, str | list) else (
        str(value).lower() if isinstance(value, bool) else repr(value))
    if isinstance(value, float) and value != value:
        rendered = "nan"
    text = (f'database = "postgresql://u@h/db"\ntenants = ["a"]\n{key} = {rendered}\n'
            '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    path = root / "fleet.toml"
    path.write_text(text)
    try:
        parse_config(path, {})
    except ConfigError as exc:
        assert exit_code(exc) == 2
        assert str(path) in str(exc)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tenants=st.lists(names, min_size=1, max_size=3))
def test_tenants_from_the_environment_exit_2_or_pass_validation(
        tmp_path: Path, db_url: str, tenants: list[str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``fleet migrate --dry-run`` with hostile TENANTS: exit 2 and no schema, or a valid
    plan; never anything else."""
    root = _project(tmp_path)
    (root / "svc" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/m\n")
    (root / "svc" / "m" / "versions").mkdir(parents=True, exist_ok=True)
    (root / "svc" / "m" / "env.py").write_text("from alembic_fleet.env import run_migrations\n"
                                               "run_migrations()\n")
    (root / "fleet.toml").write_text(
        f'database = "{db_url}"\ntenants = ["a"]\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    value = " ".join(tenants)
    if "\x00" in value:
        return  # the environment itself cannot carry NUL bytes
    monkeypatch.setenv("TENANTS", value)
    code = main(["-C", str(root), "migrate", "--dry-run", "--json"])
    capsys.readouterr()
    parts = [p for p in re.split(r"[\s,]+", value) if p]
    # No name at all: TENANTS is ignored and the file's tenants apply.
    valid = not parts or all(TENANT_PATTERN.fullmatch(p) and len(("svc_" + p).encode()) <= 63
                             for p in parts)
    assert code in (0, 2)
    assert (code == 0) == bool(valid)
    with psycopg.connect(db_url) as conn:
        count = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'svc%'"
                             ).fetchone()[0]
    assert count == 0
    os.environ.pop("TENANTS", None)
