"""``fleet tenants remove`` touches only what the schema namespace says is that tenant's.

Each case was a reported data loss: dropping ``public`` or the ledger through a ``{tenant}``
template, dropping a tenant's schemas before finding out that its source could not forget
it, and a concurrent ``fleet migrate`` recreating a schema that was just removed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import query, schemas, tables, version
from tests.faults.conftest import HEAD, shop_project, start_fleet

pytestmark = pytest.mark.slow


def _config(project, body: str) -> None:
    (project.root / "fleet.toml").write_text('database = "${DATABASE_URI}"\n' + body)


def test_remove_refuses_public_and_the_ledger_beside_a_bare_template(tmp_path: Path,
                                                                      db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 2)
    _config(project, 'tenants = ["s000", "s001"]\n\n'
            '[services.shop]\npath = "shop"\nschema = "{tenant}"\n\n'
            '[services.core]\npath = "shop"\nschema = "public"\n')
    assert project.fleet("migrate").returncode == 0
    for name in ("public", "fleet"):
        refused = project.fleet("tenants", "remove", name, "--yes")
        assert refused.returncode == 2, refused.stderr
        assert "not a configured tenant" in refused.stderr
    assert "items" in tables(db_url, "public")
    # Schemas a template matches but whose version table fleet did not write: kept.
    query(db_url, "CREATE SCHEMA x1; CREATE TABLE x1.alembic_version (version_num int); "
          "INSERT INTO x1.alembic_version VALUES (1)")
    query(db_url, "CREATE SCHEMA x2; CREATE TABLE x2.alembic_version (version_num text); "
          "INSERT INTO x2.alembic_version VALUES ('deadbeef0000')")
    for name in ("x1", "x2"):
        kept = project.fleet("tenants", "remove", name, "--yes")
        assert kept.returncode == 2, kept.stderr
    assert {"x1", "x2"} <= schemas(db_url, "x%")
    assert query(db_url, "SELECT count(*) FROM fleet.runs")[0][0] >= 1
    removed = project.fleet("tenants", "remove", "s000", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert schemas(db_url, "s00%") == {"s001"}
    # The ledger forgets the dropped schema's revisions with it.
    assert {r[0] for r in query(db_url, "SELECT DISTINCT schema_name FROM "
                                "fleet.applied_revisions WHERE service = 'shop'")} == {"s001"}
    assert version(db_url, "public") == [HEAD]


def test_remove_refuses_before_dropping_when_the_source_cannot_forget(tmp_path: Path,
                                                                      db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 2)
    query(db_url, "CREATE TABLE public.tenants (slug text PRIMARY KEY)")
    query(db_url, "INSERT INTO public.tenants VALUES ('s000'), ('s001')")
    _config(project, 'tenants = { query = "SELECT slug FROM public.tenants" }\n\n'
            '[services.shop]\npath = "shop"\nschema = "shop_{tenant}"\n')
    assert project.fleet("migrate").returncode == 0
    refused = project.fleet("tenants", "remove", "s000", "--yes")
    assert refused.returncode == 2, refused.stderr
    assert "'delete'" in refused.stderr and "nothing was dropped" in refused.stderr
    assert version(db_url, "shop_s000") == [HEAD]


def test_remove_during_a_migration_is_not_undone_by_it(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 6, sleep=0.3)
    assert project.fleet("migrate", "--to", "8000aaaa0001").returncode == 0
    runner = start_fleet(project, "migrate", "--jobs", "1", "--json")
    time.sleep(1.0)  # s000 is migrating; s005 is planned as behind, not started yet
    removed = project.fleet("tenants", "remove", "s005", "--yes")
    assert removed.returncode == 0, removed.stderr
    _out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert "shop_s005" not in schemas(db_url, "shop_%")
    for i in range(5):
        assert version(db_url, f"shop_s{i:03d}") == [HEAD]
    assert "s005" not in (project.root / "fleet.toml").read_text()
    assert project.fleet("status").returncode == 0  # no orphan, nothing behind


def test_dump_passes_the_password_in_the_environment_not_argv(tmp_path: Path,
                                                              db_url: str) -> None:
    """Any local user can read another process's argv (ps); only its owner its environment."""
    project = shop_project(tmp_path / "p", db_url, 2)
    assert project.fleet("migrate").returncode == 0
    record = tmp_path / "pg_dump.txt"
    fake = tmp_path / "bin" / "pg_dump"
    fake.parent.mkdir()
    server = int(query(db_url, "SHOW server_version_num")[0][0]) // 10000
    fake.write_text(f"""#!/bin/sh
if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) {server}.0"; exit 0; fi
echo "ARGV $*" > {record}
echo "PGPASSWORD $PGPASSWORD" >> {record}
while [ $# -gt 0 ]; do if [ "$1" = "--file" ]; then : > "$2"; fi; shift; done
""")
    fake.chmod(0o755)
    secret = "s3cret-Pw9"
    url = db_url.replace("postgres@", f"postgres:{secret}@", 1)
    removed = project.fleet("tenants", "remove", "s001", "--yes", "--dump",
                            str(tmp_path / "s001.sql"),
                            env={"DATABASE_URI": url,
                                 "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert removed.returncode == 0, removed.stderr
    argv, env = record.read_text().splitlines()
    assert secret not in argv and "--schema" in argv
    assert env == f"PGPASSWORD {secret}"
    assert secret not in removed.stdout + removed.stderr


def test_remove_of_a_tenant_not_created_yet_is_not_undone(tmp_path: Path, db_url: str) -> None:
    """The run was planned when the tenant was still configured and its schema did not
    exist: the removal is recorded under the target's lock, and the run does not create it."""
    project = shop_project(tmp_path / "p", db_url, 6, sleep=0.3)
    runner = start_fleet(project, "migrate", "--jobs", "1", "--json")
    time.sleep(1.5)  # s000 is migrating; s005 is planned as missing, not started yet
    removed = project.fleet("tenants", "remove", "s005", "--yes")
    assert removed.returncode == 0, removed.stderr
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    assert "shop_s005" not in schemas(db_url, "shop_%")
    notes = {t["schema"]: t.get("note", "") for t in json.loads(out)["targets"]}
    assert "removed after this run started" in notes["shop_s005"]
    assert project.fleet("status").returncode == 0
