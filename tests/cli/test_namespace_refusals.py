"""A schema with two possible owners is refused at load: exit 2, both owners named, and no
database touched (installed ``fleet``, real PostgreSQL)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Project, ddl_count, schemas

pytestmark = pytest.mark.slow

HEADER = 'database = "${DATABASE_URI}"\n'


def project(tmp_path: Path, db_url: str, body: str) -> Project:
    """A fleet.toml in tmp_path whose services are folders holding an alembic.ini."""
    text = HEADER + textwrap.dedent(body)
    for line in text.splitlines():
        if line.startswith("path = "):
            folder = tmp_path / line.split('"')[1]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/m\n")
    (tmp_path / "fleet.toml").write_text(text)
    return Project(tmp_path, {"DATABASE_URI": db_url}, db_url, db_url)


CASES = {
    "overlapping templates": ("""
        tenants = ["acme"]
        [services.auth]
        path = "auth"
        schema = "auth_{tenant}"
        [services.auth_audit]
        path = "auth_audit"
        schema = "auth_audit_{tenant}"
        """, {}, ["'auth'", "'auth_audit'", "both render", "services.auth_audit.schema"]),
    "tenant in another service's schema": ("""
        tenants = ["default", "public"]
        [services.app]
        path = "app"
        schema = "{tenant}"
        [services.ingestion]
        path = "ingestion"
        schema = "public"
        """, {}, ["tenant 'public' of service 'app' renders schema 'public', which belongs "
                  "to service 'ingestion'", "key 'tenants'"]),
    "tenant in the ledger": ("""
        tenants = ["default"]
        [services.app]
        path = "app"
        schema = "{tenant}"
        """, {"TENANTS": "default fleet"},
        ["tenant 'fleet' of service 'app'", "fleet's ledger", "TENANTS"]),
    "two services in one schema": ("""
        [services.ingestion]
        path = "ingestion"
        [services.billing]
        path = "billing"
        schema = "public"
        """, {}, ["services 'ingestion' and 'billing' both use schema 'public'"]),
    "reserved schema": ("""
        [services.billing]
        path = "billing"
        schema = "pg_billing"
        """, {}, ["service 'billing' uses schema 'pg_billing'", "reserved by PostgreSQL"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_anything_runs(tmp_path: Path, db_url: str, case: str) -> None:
    body, env, expected = CASES[case]
    fleet = project(tmp_path, db_url, body)
    before = schemas(db_url)
    for args in (["status"], ["migrate"]):
        result = fleet.fleet(*args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert str(tmp_path / "fleet.toml") in result.stderr
        for text in expected:
            assert text in result.stderr, (text, result.stderr)
    result = fleet.fleet("status", "--json", env=env)
    assert result.returncode == 2
    assert expected[0] in json.loads(result.stdout)["error"]["message"]
    assert schemas(db_url) == before
    assert ddl_count(db_url) == 0


def test_tenants_add_refuses_a_tenant_whose_schema_is_taken(tmp_path: Path,
                                                            db_url: str) -> None:
    fleet = project(tmp_path, db_url, CASES["tenant in another service's schema"][0]
                    .replace('["default", "public"]', '["default"]'))
    config = (tmp_path / "fleet.toml").read_text()
    before = schemas(db_url)
    result = fleet.fleet("tenants", "add", "public", "--no-migrate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "'public'" in result.stderr and "'ingestion'" in result.stderr
    assert (tmp_path / "fleet.toml").read_text() == config
    assert schemas(db_url) == before
    assert ddl_count(db_url) == 0
