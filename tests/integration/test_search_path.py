"""``search_path``: shared schemas (an extension's types) after the tenant's own, applied
the same way by replay, Alembic online, ``--sql``, ``fleet check`` and plain ``alembic``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from alembic_fleet.alembic_bridge.scripts import ServiceScripts
from alembic_fleet.config import load_config
from tests.conftest import DatabaseFactory, Project, query, schemas, tables, version
from tests.integration.crm_project import (
    install_citext,
    make_crm,
    set_keys,
)

pytestmark = pytest.mark.slow

KEY = 'search_path = ["extensions"]'


@pytest.fixture
def crm(tmp_path: Path, db_url: str, databases: DatabaseFactory) -> Project:
    """The crm project without the key; citext lives in schema ``extensions`` of the target
    and of the scratch database."""
    make_crm(tmp_path, keys="# search_path here")
    scratch = databases.create("fleet_scratch_t")
    install_citext(db_url)
    install_citext(scratch)
    return Project(tmp_path, {"DATABASE_URI": db_url, "FLEET_SCRATCH_DATABASE_URL": scratch},
                   db_url, db_url)


def citext_column(url: str, schema: str) -> str:
    return query(url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                 "WHERE attrelid = %s::regclass AND attname = 'email'",
                 (f'"{schema}".contacts',))[0][0]


def test_migrate_fails_without_the_key_and_works_with_it_replayed_and_online(
        crm: Project) -> None:
    failed = crm.fleet("migrate", "--json")
    assert failed.returncode == 1
    errors = [t["error"] for t in json.loads(failed.stdout)["targets"]]
    assert all('type "citext" does not exist' in e for e in errors), errors
    assert not schemas(crm.db_url, "crm_%")  # rolled back

    set_keys(crm.root, "# search_path here", KEY)
    service = load_config(crm.root / "fleet.toml").services["crm"]
    assert service.search_path == ("extensions",)
    assert ServiceScripts(service).replay_plan((), "heads") is not None  # replayable
    replayed = crm.fleet("migrate", "--tenant", "acme")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    online = crm.fleet("migrate", "--tenant", "globex", env={"FLEET_REPLAY": "0"})
    assert online.returncode == 0, online.stdout + online.stderr
    for schema in ("crm_acme", "crm_globex"):
        assert version(crm.db_url, schema) == ["cc0000000001"]
        assert citext_column(crm.db_url, schema) == "extensions.citext"
        query(crm.db_url, f"INSERT INTO {schema}.contacts (email) VALUES ('Ann@X.org')")
        assert query(crm.db_url, f"SELECT count(*) FROM {schema}.contacts "
                     "WHERE email OPERATOR(extensions.=) 'ann@x.org'")[0][0] == 1
    # The shared schema is context only: nothing was created there.
    assert tables(crm.db_url, "extensions") == set()
    assert query(crm.db_url, "SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                 "ON n.oid = c.relnamespace WHERE n.nspname = 'extensions' "
                 "AND c.relkind <> 'c'")[0][0] == 0
    # The session's search path was reset after the targets.
    again = crm.fleet("migrate", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["migrated"] == 0


def test_sql_output_sets_the_search_path_and_applies(crm: Project,
                                                     databases: DatabaseFactory) -> None:
    set_keys(crm.root, "# search_path here", KEY)
    result = crm.fleet("migrate", "--sql")
    assert result.returncode == 0, result.stderr
    assert 'SET search_path TO "crm_acme", "extensions"' in result.stdout
    offline = databases.create("fleet_sql")
    install_citext(offline)
    applied = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", offline],
                             input=result.stdout, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert citext_column(offline, "crm_globex") == "extensions.citext"


def test_check_reports_fc303_without_the_key_and_passes_with_it(crm: Project) -> None:
    without = crm.fleet("check", "--json")
    assert without.returncode == 3, without.stderr
    payload = json.loads(without.stdout)
    assert [f["code"] for f in payload["findings"]] == ["FC303"]
    assert "citext" in payload["findings"][0]["message"]

    set_keys(crm.root, "# search_path here", KEY)
    result = crm.fleet("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads(result.stdout)
    assert payload["findings"] == []
    assert "downgrade round trip" in payload["checks"]["crm"]
    assert "model drift" in payload["checks"]["crm"]


def test_check_says_when_the_scratch_database_lacks_the_shared_schema(
        crm: Project, databases: DatabaseFactory) -> None:
    set_keys(crm.root, "# search_path here", KEY)
    bare = databases.create("fleet_scratch_bare")
    result = crm.fleet("check", "--json", env={"FLEET_SCRATCH_DATABASE_URL": bare})
    assert result.returncode == 3
    message = json.loads(result.stdout)["findings"][0]["message"]
    assert "search_path schema extensions does not exist in the scratch database" in message


def test_plain_alembic_uses_the_key_from_fleet_toml(crm: Project) -> None:
    failed = crm.alembic("crm_service", "-x", "tenant=acme", "upgrade", "head")
    assert failed.returncode != 0
    assert "citext" in failed.stderr
    set_keys(crm.root, "# search_path here", KEY)
    done = crm.alembic("crm_service", "-x", "tenant=acme", "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert citext_column(crm.db_url, "crm_acme") == "extensions.citext"
    # The environment variable (or -x search_path=) overrides fleet.toml.
    override = crm.alembic("crm_service", "upgrade", "head",
                           env={"ALEMBIC_SCHEMA": "crm_other", "ALEMBIC_SEARCH_PATH": ""})
    assert override.returncode != 0 and "citext" in override.stderr
    bad = crm.alembic("crm_service", "-x", "search_path=a;b", "upgrade", "head",
                      env={"ALEMBIC_SCHEMA": "crm_other"})
    assert bad.returncode != 0 and "not a schema name" in bad.stdout + bad.stderr
    # fleet agrees with what plain alembic did.
    status = crm.fleet("status", "--tenant", "acme", "--json")
    assert json.loads(status.stdout)["targets"][0]["state"] == "at_head"


def test_warns_of_shared_tables_the_revisions_name_and_of_missing_schemas(
        crm: Project) -> None:
    set_keys(crm.root, "# search_path here",
             'search_path = ["extensions", "shared", "nowhere"]')
    query(crm.db_url, "CREATE SCHEMA shared; CREATE TABLE shared.contacts (id int); "
          "CREATE TABLE shared.unrelated (id int)")
    status = crm.fleet("status")
    assert "search_path schema shared" in status.stderr
    assert "holds contacts" in status.stderr and "unrelated" not in status.stderr
    assert "search_path schema nowhere does not exist" in status.stderr
    result = crm.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout
    warnings = json.loads(result.stdout)["warnings"]
    assert any("shared.contacts" in w for w in warnings)
    assert any("nowhere does not exist" in w for w in warnings)
    # The tenant's own table came first: the shared one is untouched.
    assert tables(crm.db_url, "crm_acme") >= {"contacts"}
    assert query(crm.db_url, "SELECT count(*) FROM shared.contacts")[0][0] == 0
    # A no-op run reads nothing more and warns of nothing.
    again = crm.fleet("migrate", "--json")
    assert "warnings" not in json.loads(again.stdout)


def test_a_legacy_service_with_the_key_is_refused(crm: Project) -> None:
    set_keys(crm.root, "# search_path here", KEY)
    env_py = crm.root / "crm_service" / "migrations" / "env.py"
    env_py.write_text("from alembic import context\nraise SystemExit('not run')\n")
    result = crm.fleet("migrate")
    assert result.returncode == 2
    assert "does not use alembic_fleet.env" in result.stderr
    assert not schemas(crm.db_url, "crm_%")
