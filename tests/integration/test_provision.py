"""New tenants copied from a reference schema (``provision = "reference"``), against real
PostgreSQL, through the installed ``fleet``.

Every copy is compared with a tenant migrated the ordinary way from the same history:
``pg_dump -s`` (names set aside), version rows, ledger rows, seeded rows, and what the
next insert gets from each sequence. The histories that must not be copied are refused
(each detection has its case) and their tenants migrated, with the reason said.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project, query, schemas, script, version
from tests.integration.test_sql_and_alembic import _dump

pytestmark = pytest.mark.slow

HEAD = "8800aaaa0005"

REVISIONS = {
    "8800aaaa0001_base.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade():
            mood = sa.Enum("calm", "busy", name="mood")
            op.create_table(
                "users",
                sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
                sa.Column("email", sa.String(200), nullable=False, unique=True),
                sa.Column("mood", mood, server_default="calm", nullable=False),
                sa.Column("legacy", sa.Integer))
            op.create_table(
                "roles",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("name", sa.Text, nullable=False))
            op.execute("INSERT INTO roles (name) VALUES ('admin'), ('member'), ('guest')")
            op.execute("INSERT INTO users (email) VALUES ('root@example.com')")
            op.create_index("ix_roles_name", "roles", ["name"], unique=True)


        def downgrade():
            pass
    ''',
    "8800aaaa0002_items.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0002"
        down_revision = "8800aaaa0001"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.create_table(
                "items",
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("owner_id", sa.BigInteger, sa.ForeignKey("users.id"), nullable=False),
                sa.Column("price", sa.Numeric(10, 2), nullable=False),
                sa.Column("doubled", sa.Numeric(12, 2), sa.Computed("price * 2", persisted=True)))
            op.drop_column("users", "legacy")
            op.execute("INSERT INTO items (owner_id, price) VALUES (1, 9.5), (1, 3)")
            op.execute("COMMENT ON TABLE items IS 'things users own'")
            op.execute("CREATE SEQUENCE invoice_numbers START 1000")
            op.execute("SELECT nextval('invoice_numbers')")


        def downgrade():
            pass
    ''',
    "8800aaaa0003_logic.py": '''
        from alembic import op

        revision = "8800aaaa0003"
        down_revision = "8800aaaa0002"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.execute("CREATE VIEW expensive AS SELECT id, price FROM items WHERE price > 5")
            op.execute("""
                CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    NEW.email := lower(NEW.email);
                    RETURN NEW;
                END $$""")
            op.execute("CREATE TRIGGER users_touch BEFORE INSERT ON users "
                       "FOR EACH ROW EXECUTE FUNCTION touch()")
            op.execute("CREATE TABLE settings (key text PRIMARY KEY, value jsonb NOT NULL)")
            op.execute("""INSERT INTO settings VALUES ('theme', '{"dark": true}')""")


        def downgrade():
            pass
    ''',
    "8800aaaa0004_online.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0004"
        down_revision = "8800aaaa0003"
        branch_labels = None
        depends_on = None


        def upgrade():
            bind = op.get_bind()
            roles = bind.exec_driver_sql("SELECT count(*) FROM roles").scalar()
            if sa.inspect(bind).has_table("roles"):
                op.create_table("role_counts", sa.Column("n", sa.Integer, nullable=False))
                op.execute(f"INSERT INTO role_counts (n) VALUES ({roles})")


        def downgrade():
            pass
    ''',
    "8800aaaa0005_events.py": '''
        import sqlalchemy as sa
        from alembic import op

        revision = "8800aaaa0005"
        down_revision = "8800aaaa0004"
        branch_labels = None
        depends_on = None


        def upgrade():
            op.execute("CREATE TABLE events (id serial, at date NOT NULL, what text) "
                       "PARTITION BY RANGE (at)")
            op.execute("CREATE TABLE events_2024 PARTITION OF events "
                       "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
            op.execute("CREATE TABLE events_2025 PARTITION OF events "
                       "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
            op.execute("INSERT INTO events (at, what) VALUES ('2024-05-01', 'a'), "
                       "('2025-05-01', 'b')")
            op.alter_column("roles", "name", type_=sa.String(50))
            op.add_column("roles", sa.Column("rank", sa.Integer, server_default="0"))


        def downgrade():
            pass
    ''',
}

TOML = """\
database = "${DATABASE_URI}"
tenants = ${TENANTS_LIST}
provision = "${PROVISION:-reference}"

[services.svc]
path = "svc"
schema = "svc_{tenant}"
"""


def _write_service(root: Path, revisions: dict[str, str]) -> None:
    versions = root / "svc" / "migrations" / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (root / "svc" / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / "svc" / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    for name, body in revisions.items():
        (versions / name).write_text(textwrap.dedent(body).lstrip())


def _project(tmp_path: Path, db_url: str, revisions: dict[str, str] | None = None,
             tenants: tuple[str, ...] = ("m",)) -> Project:
    root = tmp_path / "proj"
    _write_service(root, REVISIONS if revisions is None else revisions)
    (root / "fleet.toml").write_text(TOML.replace("${TENANTS_LIST}", json.dumps(list(tenants))))
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def _targets(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    payload = json.loads(result.stdout)
    migration = payload.get("migration", payload)
    return {t["schema"]: t for t in migration["targets"]}


def _add(project: Project, *names: str, env: dict[str, str] | None = None) -> dict[str, dict]:
    result = project.fleet("tenants", "add", *names, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return _targets(result)


def _references(db_url: str) -> list[tuple]:
    return query(db_url, "SELECT service, schema_name, refused FROM fleet.reference_schemas "
                 "ORDER BY created_at")


def _normalised_dump(db_url: str, schema: str) -> str:
    return _dump(db_url, schema).replace(schema, "SCHEMA")


def _migrated(project: Project, tenant: str = "m") -> None:
    result = project.fleet("migrate", "--json", env={"PROVISION": "migrate"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _targets(result)[f"svc_{tenant}"]["via"] == "mixed"


def test_new_tenants_are_copies_of_what_a_migration_builds(tmp_path: Path, db_url: str
                                                           ) -> None:
    project = _project(tmp_path, db_url)
    _migrated(project)
    targets = _add(project, "a", "b")
    assert {t["via"] for t in targets.values()} == {"reference"}, targets
    assert all(not t.get("note") for t in targets.values())
    [(service, reference, refused)] = _references(db_url)
    assert (service, refused) == ("svc", None) and reference.startswith("fleet_ref_")
    expected = _normalised_dump(db_url, "svc_m")
    tables = ("roles", "users", "items", "settings", "role_counts", "events")
    seeded = {t: query(db_url, f"SELECT * FROM svc_m.{t} ORDER BY 1") for t in tables}
    # Every sequence continues where the migrated tenant's does.
    inserts = ("INSERT INTO {}.roles (name) VALUES ('x') RETURNING id",
               "INSERT INTO {}.users (email) VALUES ('X@y') RETURNING id, email",
               "INSERT INTO {}.events (at) VALUES ('2025-02-02') RETURNING id",
               "SELECT nextval('{}.invoice_numbers')")
    following = [query(db_url, insert.format("svc_m")) for insert in inserts]
    assert following[0] == [(4,)] and following[3] == [(1001,)]
    for tenant in ("a", "b"):
        schema = f"svc_{tenant}"
        assert _normalised_dump(db_url, schema) == expected
        assert version(db_url, schema) == [HEAD]
        for table in tables:
            assert query(db_url, f"SELECT * FROM {schema}.{table} ORDER BY 1") == seeded[table]
        assert [query(db_url, insert.format(schema)) for insert in inserts] == following
    # The ledger holds what a migration writes: each revision's checksum, the target's row.
    applied = "SELECT revision, checksum FROM fleet.applied_revisions WHERE schema_name = %s " \
        "ORDER BY 1"
    assert query(db_url, applied, ("svc_a",)) == query(db_url, applied, ("svc_m",))
    assert len(query(db_url, applied, ("svc_a",))) == 5
    rows = query(db_url, "SELECT schema_name, outcome, to_revisions FROM fleet.run_targets "
                 "WHERE schema_name IN ('svc_a', 'svc_b') ORDER BY 1")
    assert rows == [("svc_a", "migrated", [HEAD]), ("svc_b", "migrated", [HEAD])]
    # Nothing odd for the other commands: the reference is fleet's, not an orphan.
    status = project.fleet("status", "--json")
    assert status.returncode == 0, status.stdout
    assert json.loads(status.stdout)["summary"]["orphan"] == 0
    listed = json.loads(project.fleet("tenants", "list", "--json").stdout)["tenants"]
    assert {r["presence"] for r in listed} == {"present"}
    assert json.loads(project.fleet("migrate", "--json").stdout)["summary"]["migrated"] == 0
    check = project.fleet("check", "--database", "--format", "json")
    assert reference not in check.stdout
    # Removing a copied tenant works as for any other; the reference stays.
    removed = project.fleet("tenants", "remove", "b", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not schemas(db_url, "svc_b") and schemas(db_url, reference) == {reference}
    refused = project.fleet("tenants", "remove", reference.removeprefix("svc_"), "--yes")
    assert refused.returncode == 2 and schemas(db_url, reference) == {reference}
