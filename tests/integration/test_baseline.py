"""``baseline``: histories whose first revision alters tables that ``create_all()`` made.

The baseline stands for base: a schema that does not exist yet gets it right after its
creation, in the same transaction, and the revisions then run from base. An existing schema
never gets it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DatabaseFactory, Project, ddl_count, query, schemas, tables, version
from tests.integration.crm_project import make_crm, revision_file, set_keys

pytestmark = pytest.mark.slow

BASELINE_SQL = """\
-- What metadata.create_all() made before the project adopted Alembic.
CREATE TABLE contacts (
    id serial PRIMARY KEY,
    email varchar(200) NOT NULL
);
CREATE INDEX ix_contacts_email ON contacts (email)  -- no ';' here, and a % sign
"""

ADD_PHONE = revision_file(
    "dd0000000001", None,
    'op.add_column("contacts", sa.Column("phone", sa.String(50), nullable=True))',
    'op.drop_column("contacts", "phone")')

MODELS = """\
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    id = sa.Column(sa.Integer, primary_key=True)
    email = sa.Column(sa.String(200), nullable=False, index=True)
    phone = sa.Column(sa.String(50), nullable=True)
"""

BASELINE_PY = """\
import sqlalchemy as sa


def create(connection):
    # A frozen copy of the tables as create_all() made them (not the current models).
    metadata = sa.MetaData()
    sa.Table("contacts", metadata,
             sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("email", sa.String(200), nullable=False, index=True))
    metadata.create_all(connection, checkfirst=False)
"""


@pytest.fixture
def crm(tmp_path: Path, db_url: str, databases: DatabaseFactory) -> Project:
    """The crm project with the baseline file but without the key."""
    make_crm(tmp_path, keys="# baseline here", models=MODELS,
             revisions={"dd0000000001_phone.py": ADD_PHONE},
             files={"db/baseline.sql": BASELINE_SQL, "crm/baseline.py": BASELINE_PY})
    scratch = databases.create("fleet_scratch_t")
    return Project(tmp_path, {"DATABASE_URI": db_url, "FLEET_SCRATCH_DATABASE_URL": scratch},
                   db_url, db_url)


def columns(url: str, schema: str) -> list[str]:
    return [r[0] for r in query(url, "SELECT column_name FROM information_schema.columns "
                                "WHERE table_schema = %s AND table_name = 'contacts' "
                                "ORDER BY ordinal_position", (schema,))]


def test_check_reports_fc303_without_the_baseline_and_passes_with_it(crm: Project) -> None:
    without = crm.fleet("check", "--json")
    assert without.returncode == 3, without.stderr
    findings = json.loads(without.stdout)["findings"]
    assert [f["code"] for f in findings] == ["FC303"]
    assert 'relation "contacts" does not exist' in findings[0]["message"]

    set_keys(crm.root, "# baseline here", 'baseline = "db/baseline.sql"')
    result = crm.fleet("check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads(result.stdout)
    assert payload["findings"] == []
    # The round trip went down to base (the baseline's shape) and up again.
    assert {"scratch upgrade", "model drift", "downgrade round trip"} <= set(
        payload["checks"]["crm"])
    assert not schemas(crm.env["FLEET_SCRATCH_DATABASE_URL"], "fleet_check%")


def test_fresh_tenants_get_the_baseline_then_the_revisions_and_a_rerun_is_a_no_op(
        crm: Project) -> None:
    set_keys(crm.root, "# baseline here", 'baseline = "db/baseline.sql"')
    replayed = crm.fleet("migrate", "--tenant", "acme")
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    online = crm.fleet("migrate", "--tenant", "globex", env={"FLEET_REPLAY": "0"})
    assert online.returncode == 0, online.stdout + online.stderr
    for schema in ("crm_acme", "crm_globex"):
        assert version(crm.db_url, schema) == ["dd0000000001"]
        assert columns(crm.db_url, schema) == ["id", "email", "phone"]
        assert tables(crm.db_url, schema) == {"contacts", "alembic_version"}

    before = ddl_count(crm.db_url)
    again = crm.fleet("migrate", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["summary"]["migrated"] == 0
    assert ddl_count(crm.db_url) == before

    # A tenant added later gets the baseline too.
    added = crm.fleet("tenants", "add", "initech", "--json")
    assert added.returncode == 0, added.stdout + added.stderr
    assert columns(crm.db_url, "crm_initech") == ["id", "email", "phone"]
    assert version(crm.db_url, "crm_initech") == ["dd0000000001"]

    # A schema that already exists never gets it: here create_all() ran, nobody stamped.
    query(crm.db_url, "CREATE SCHEMA crm_hooli; "
          "CREATE TABLE crm_hooli.contacts (id serial PRIMARY KEY, email text NOT NULL)")
    existing = crm.fleet("tenants", "add", "hooli")
    assert existing.returncode == 0, existing.stdout + existing.stderr
    assert columns(crm.db_url, "crm_hooli") == ["id", "email", "phone"]
    assert query(crm.db_url, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'crm_hooli' "
                 "AND indexname = 'ix_contacts_email'")[0][0] == 0


def test_sql_includes_the_baseline_for_missing_schemas_and_plain_alembic_applies_it(
        crm: Project, databases: DatabaseFactory) -> None:
    set_keys(crm.root, "# baseline here", 'baseline = "db/baseline.sql"')
    # Plain alembic in the service folder, through the env helper: a fresh schema.
    plain = crm.alembic("crm_service", "-x", "tenant=acme", "upgrade", "head")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert columns(crm.db_url, "crm_acme") == ["id", "email", "phone"]
    # Downgraded to base, the schema exists: upgrading again must not re-run the baseline.
    assert crm.fleet("downgrade", "crm", "base", "--tenant", "acme", "--yes").returncode == 0
    assert columns(crm.db_url, "crm_acme") == ["id", "email"]

    result = crm.fleet("migrate", "--sql")
    assert result.returncode == 0, result.stderr
    acme, globex = result.stdout.split("-- crm/crm_globex")
    assert "CREATE TABLE contacts" not in acme  # exists (at base)
    assert globex.index("CREATE TABLE contacts") < globex.index("ADD COLUMN phone")
    offline = databases.create("fleet_sql")
    query(offline, "CREATE SCHEMA crm_acme; CREATE TABLE crm_acme.contacts "
          "(id serial PRIMARY KEY, email varchar(200) NOT NULL)")
    applied = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-", offline],
                             input=result.stdout, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    for schema in ("crm_acme", "crm_globex"):
        assert columns(offline, schema) == ["id", "email", "phone"]
    assert crm.fleet("migrate").returncode == 0
    assert columns(crm.db_url, "crm_acme") == ["id", "email", "phone"]


def test_callable_baseline(crm: Project) -> None:
    set_keys(crm.root, "# baseline here", 'baseline = "crm.baseline:create"')
    result = crm.fleet("migrate", "--tenant", "acme")
    assert result.returncode == 0, result.stdout + result.stderr
    online = crm.fleet("migrate", "--tenant", "globex", env={"FLEET_REPLAY": "0"})
    assert online.returncode == 0, online.stdout + online.stderr
    for schema in ("crm_acme", "crm_globex"):
        assert columns(crm.db_url, schema) == ["id", "email", "phone"]
    check = crm.fleet("check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    # --sql cannot render Python for a schema that does not exist: refused, not incomplete.
    sql = crm.fleet("tenants", "add", "initech", "--no-migrate")
    assert sql.returncode == 0
    refused = crm.fleet("migrate", "--sql")
    assert refused.returncode == 2
    assert "Python callable" in refused.stderr


def test_a_failing_baseline_fails_the_target_and_creates_nothing(crm: Project) -> None:
    (crm.root / "crm_service" / "db" / "baseline.sql").write_text(
        "CREATE TABLE contacts (id int);\nCREATE TABLE broken (;\n")
    set_keys(crm.root, "# baseline here", 'baseline = "db/baseline.sql"')
    for env in ({}, {"FLEET_REPLAY": "0"}):
        result = crm.fleet("migrate", "--json", env=env)
        assert result.returncode == 1
        for target in json.loads(result.stdout)["targets"]:
            assert target["error"].startswith("the baseline "), target["error"]
            assert "syntax error" in target["error"]
        assert not schemas(crm.db_url, "crm_%")
