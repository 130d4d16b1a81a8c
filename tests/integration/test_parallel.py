"""Parallel migration: same result as a serial run, dependency order, legacy env.py files,
orphan schemas, and a worker process killed mid-run."""

from __future__ import annotations

import difflib
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO, DatabaseFactory, Project, query, schemas, tables, version
from tests.integration.test_sql_and_alembic import _dump

pytestmark = pytest.mark.slow

MANY = " ".join(["default", "toshiba", "iopex"] + [f"t{i:02d}" for i in range(12)])


def _ddl_per_schema(url: str) -> dict[str, int]:
    rows = query(url, "SELECT schema_name, count(*) FROM public.fleet_test_ddl_log "
                      "GROUP BY schema_name")
    return {r[0]: r[1] for r in rows if r[0]}


def test_parallel_run_equals_serial_run(example: Project, databases: DatabaseFactory) -> None:
    """Parallel workers replaying rendered revisions give exactly what one process running
    Alembic online gives: same schemas (pg_dump), same DDL commands per schema."""
    serial_db = databases.create("fleet_serial")
    query(serial_db, (REPO / "tests" / "conftest.py").read_text().split('DDL_LOG = """')[1]
          .split('"""')[0])
    parallel = example.fleet("migrate", "--jobs", "4", "--json", env={"TENANTS": MANY})
    assert parallel.returncode == 0, parallel.stderr
    assert json.loads(parallel.stdout)["summary"]["migrated"] == 31
    # The reference: one process, every revision through Alembic online (no replay).
    serial = example.fleet("migrate", "--jobs", "1", env={"TENANTS": MANY, "FLEET_REPLAY": "0",
                                                          "DATABASE_URI": serial_db})
    assert serial.returncode == 0, serial.stderr

    tenant_schemas = schemas(example.db_url, "auth_%") | schemas(example.db_url, "workflow_%")
    assert len(tenant_schemas) == 30
    assert tenant_schemas == schemas(serial_db, "auth_%") | schemas(serial_db, "workflow_%")
    # One pg_dump per database for all 30 schemas (not 60 pg_dump runs); a difference shows
    # as a diff naming the objects.
    parallel_ddl, serial_ddl = (_dump(url, "auth_*", "workflow_*")
                                for url in (example.db_url, serial_db))
    assert parallel_ddl == serial_ddl, "\n".join(difflib.unified_diff(
        serial_ddl.splitlines(), parallel_ddl.splitlines(), "serial", "parallel", lineterm=""))
    assert all(f'CREATE TABLE "{schema}".' in parallel_ddl or f"CREATE TABLE {schema}." in
               parallel_ddl for schema in tenant_schemas)
    # Each revision applied once: the same DDL commands per schema as the serial run.
    assert _ddl_per_schema(example.db_url) == _ddl_per_schema(serial_db)
    # And nothing left to do.
    again = example.fleet("migrate", "--json", env={"TENANTS": MANY})
    assert json.loads(again.stdout)["summary"]["skipped"] == 31


def test_orphan_schemas_are_reported(example: Project) -> None:
    assert example.fleet("migrate", env={"TENANTS": "default toshiba iopex acme"}).returncode == 0
    status = example.fleet("status", "--json")
    assert status.returncode == 0, status.stdout  # orphans are no reason to fail
    payload = json.loads(status.stdout)
    orphans = [(t["service"], t["tenant"], t["schema"]) for t in payload["targets"]
               if t["state"] == "orphan"]
    assert sorted(orphans) == [("auth", "acme", "auth_acme"),
                               ("workflow", "acme", "workflow_acme")]
    assert payload["summary"]["orphan"] == 2 and payload["summary"]["at_head"] == 7
    text = example.fleet("status")
    assert "auth_acme" in text.stdout and "orphan" in text.stdout
    # Narrowed to a tenant, there is no orphan to speak of.
    narrowed = json.loads(example.fleet("status", "--tenant", "default", "--json").stdout)
    assert narrowed["summary"]["orphan"] == 0


def test_legacy_env_py_runs_as_alembic_subprocesses(example: Project) -> None:
    env_py = example.root / "python_apps" / "auth_api" / "migrations" / "env.py"
    shutil.copyfile(REPO / "tests" / "fixtures" / "legacy_env.py", env_py)
    result = example.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = {t["schema"]: t for t in json.loads(result.stdout)["targets"]}
    assert outcome["auth_toshiba"]["outcome"] == "migrated"
    assert outcome["auth_toshiba"]["to"] == ["a15f8c0e3d96"]
    for tenant in ("default", "toshiba", "iopex"):
        assert version(example.db_url, f"auth_{tenant}") == ["a15f8c0e3d96"]
        assert "users" in tables(example.db_url, f"auth_{tenant}")
    # The same bulk skip applies: nothing runs the second time.
    again = json.loads(example.fleet("migrate", "--json").stdout)
    assert {t["outcome"] for t in again["targets"]} == {"skipped"}
    assert example.fleet("status").returncode == 0


def _service(root: Path, name: str, revisions: dict[str, str]) -> None:
    versions = root / name / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / name / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    (root / name / "migrations" / "env.py").write_text(
        "from alembic_fleet.env import run_migrations\n\nrun_migrations()\n")
    for file_name, body in revisions.items():
        (versions / file_name).write_text(textwrap.dedent(body))


ACCOUNTS = '''\
    import os
    import signal
    import sqlalchemy as sa
    from alembic import op

    revision = "3000cccc0001"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        schema = op.get_bind().exec_driver_sql("SELECT current_schema()").scalar()
        if schema == os.environ.get("FLEET_TEST_KILL_IN"):
            os.kill(os.getpid(), signal.SIGKILL)  # a worker dies in the middle of a migration
        op.create_table("users", sa.Column("id", sa.Integer, primary_key=True))
        if schema == os.environ.get("FLEET_TEST_FAIL_IN"):
            raise RuntimeError("accounts failed on purpose")


    def downgrade():
        op.drop_table("users")
'''

BILLING = '''\
    from alembic import op

    revision = "4000dddd0001"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        # Proves the order: the same tenant's accounts schema must already be migrated.
        op.execute("""
            DO $$ BEGIN
                IF to_regclass(format('%I.users',
                               replace(current_schema(), 'billing_', 'accounts_'))) IS NULL THEN
                    RAISE EXCEPTION 'accounts was not migrated before billing';
                END IF;
            END $$
        """)
        op.execute("CREATE TABLE invoices (id int PRIMARY KEY)")


    def downgrade():
        op.execute("DROP TABLE invoices")
'''


def _dependent_project(tmp_path: Path, db_url: str) -> Project:
    root = tmp_path / "deps"
    _service(root, "billing", {"4000dddd0001_invoices.py": BILLING})
    _service(root, "accounts", {"3000cccc0001_users.py": ACCOUNTS})
    tenants = ", ".join(f'"t{i:02d}"' for i in range(16))
    (root / "fleet.toml").write_text(textwrap.dedent(f"""\
        database = "${{DATABASE_URI}}"
        tenants = [{tenants}]
        priority = ["t15"]
        jobs = 4

        [services.billing]
        path = "billing"
        schema = "billing_{{tenant}}"
        depends_on = ["accounts"]

        [services.accounts]
        path = "accounts"
        schema = "accounts_{{tenant}}"
        """))
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def test_depends_on_orders_services_per_tenant(tmp_path: Path, db_url: str) -> None:
    """billing is listed first but depends on accounts; with one job the order is exact:
    the priority tenant first, then the configured order, accounts before billing."""
    project = _dependent_project(tmp_path, db_url)
    result = project.fleet("migrate", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(schemas(db_url, "billing_%")) == 16 and len(schemas(db_url, "accounts_%")) == 16
    rows = query(db_url, "SELECT schema_name FROM public.fleet_test_ddl_log "
                         "WHERE schema_name IS NOT NULL AND schema_name <> 'fleet' ORDER BY id")
    order = list(dict.fromkeys(r[0] for r in rows))
    assert order[:6] == ["accounts_t15", "billing_t15", "accounts_t00", "billing_t00",
                         "accounts_t01", "billing_t01"]


def test_dependents_of_a_failed_target_do_not_start(tmp_path: Path, db_url: str) -> None:
    project = _dependent_project(tmp_path, db_url)
    result = project.fleet("migrate", "--json", env={"FLEET_TEST_FAIL_IN": "accounts_t03"})
    assert result.returncode == 1
    outcome = {t["schema"]: t for t in json.loads(result.stdout)["targets"]}
    assert outcome["accounts_t03"]["outcome"] == "failed"
    assert outcome["billing_t03"]["outcome"] == "skipped"
    assert "depends on failed" in outcome["billing_t03"]["note"]
    assert outcome["billing_t04"]["outcome"] == "migrated"


def test_a_killed_worker_fails_its_target_only(tmp_path: Path, db_url: str) -> None:
    project = _dependent_project(tmp_path, db_url)
    result = project.fleet("migrate", "--json", env={"FLEET_TEST_KILL_IN": "accounts_t07"})
    assert result.returncode == 1, result.stderr
    outcome = {t["schema"]: t for t in json.loads(result.stdout)["targets"]}
    killed = outcome["accounts_t07"]
    assert killed["outcome"] == "failed"
    assert "worker process" in killed["error"] and "signal 9" in killed["error"]
    assert outcome["billing_t07"]["outcome"] == "skipped"
    migrated = [s for s, t in outcome.items() if t["outcome"] == "migrated"]
    assert len(migrated) == 30
    # The server rolled the killed worker's transaction back: no trace of the schema.
    assert "accounts_t07" not in schemas(db_url, "accounts_%")
    rerun = project.fleet("migrate", "--json")
    assert rerun.returncode == 0
    ran = {t["schema"] for t in json.loads(rerun.stdout)["targets"] if t["outcome"] == "migrated"}
    assert ran == {"accounts_t07", "billing_t07"}


SAME_NAME_REVISION = '''\
    import sqlalchemy as sa
    from alembic import op

    revision = "{rev}"
    down_revision = None
    branch_labels = None
    depends_on = None


    def upgrade():
        from app.tables import TABLE  # each service ships its own package called "app"

        op.create_table(TABLE, sa.Column("id", sa.Integer, primary_key=True))


    def downgrade():
        pass
'''


def test_services_with_same_package_names_stay_apart(tmp_path: Path, db_url: str) -> None:
    root = tmp_path / "same"
    for name, rev in (("one", "5000eeee0001"), ("two", "6000ffff0001")):
        _service(root, name, {f"{rev}_t.py": SAME_NAME_REVISION.format(rev=rev)})
        (root / name / "app").mkdir()
        (root / name / "app" / "__init__.py").write_text("")
        (root / name / "app" / "tables.py").write_text(f'TABLE = "{name}_table"\n')
    (root / "fleet.toml").write_text(textwrap.dedent("""\
        database = "${DATABASE_URI}"
        tenants = ["a", "b"]

        [services.one]
        path = "one"
        schema = "one_{tenant}"

        [services.two]
        path = "two"
        schema = "two_{tenant}"
        """))
    project = Project(root, {"DATABASE_URI": db_url}, db_url, db_url)
    result = project.fleet("migrate", "--jobs", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    for tenant in ("a", "b"):
        assert tables(db_url, f"one_{tenant}") == {"one_table", "alembic_version"}
        assert tables(db_url, f"two_{tenant}") == {"two_table", "alembic_version"}


def test_a_worker_opens_a_new_session_after_its_share_of_targets(tmp_path: Path,
                                                                 db_url: str) -> None:
    """A worker's server session keeps a cache entry for every table it touched, and at
    thousands of schemas each later catalog change got dearer (3.4 GB in one backend): a
    worker moves to a new session every FLEET_SESSION_TARGETS targets. Each schema records
    the backend that migrated it."""
    from tests.integration.test_replay_correctness import _revision

    root = tmp_path / "proj"
    _service(root, "svc", {"first.py": _revision(
        "9300aaaa0001", None, 'op.execute("CREATE TABLE seen AS SELECT pg_backend_pid() AS pid")')})
    tenants = ", ".join(f'"t{i}"' for i in range(6))
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = [{tenants}]\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    project = Project(root, {"DATABASE_URI": db_url, "FLEET_SESSION_TARGETS": "2"},
                      db_url, db_url)
    result = project.fleet("migrate", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    pids = [query(db_url, f"SELECT pid FROM svc_t{i}.seen")[0][0] for i in range(6)]
    assert all(version(db_url, f"svc_t{i}") == ["9300aaaa0001"] for i in range(6))
    assert len(set(pids)) == 3, pids
