"""The dev loop: ``fleet up`` and ``fleet run`` as ``npm run dev`` uses them."""

from __future__ import annotations

import json
import shutil

import psycopg
import pytest

from tests.conftest import (
    DatabaseFactory,
    Project,
    copy_example,
    ddl_count,
    private_tmp,
    query,
    run,
    schemas,
    tables,
    version,
)

pytestmark = pytest.mark.slow


def test_up_and_run_on_the_embedded_postgresql() -> None:
    """No database installed: up starts the embedded server, migrates, prints the URLs;
    the second up is the no-op path; run hands the URLs to the command and its exit code
    back; SKIP_MIGRATIONS skips the migration step."""
    folder = private_tmp("fleet-test-dev-")
    root = folder / "elevaite"
    copy_example(root)
    try:
        up = run(["fleet", "up"], cwd=root, env={})
        assert up.returncode == 0, up.stderr
        assert "7 migrated" in up.stderr
        exports = dict(line.removeprefix("export ").split("=", 1)
                       for line in up.stdout.splitlines())
        assert set(exports) == {"DATABASE_URI", "INGESTION_DATABASE_URL"}
        url = exports["DATABASE_URI"].strip("'")
        assert version(url, "auth_toshiba") == ["a15f8c0e3d96"]

        again = run(["fleet", "up"], cwd=root, env={})
        assert again.returncode == 0 and "nothing pending" in again.stderr
        assert again.stdout == up.stdout

        child = run(["fleet", "run", "--", "sh", "-c",
                     'psql "$DATABASE_URI" -Atc "select 1" >/dev/null 2>&1 || true; '
                     'echo "uri=$INGESTION_DATABASE_URL"; exit 7'], cwd=root, env={})
        assert child.returncode == 7, child.stderr
        assert child.stdout.strip() == "uri=" + exports["INGESTION_DATABASE_URL"].strip("'")

        # A pending revision: SKIP_MIGRATIONS leaves it pending, a plain run applies it.
        down = run(["fleet", "downgrade", "auth", "--tenant", "iopex", "-1", "--yes"], cwd=root,
                   env={})
        assert down.returncode == 0, down.stderr
        skipped = run(["fleet", "run", "--", "true"], cwd=root, env={"SKIP_MIGRATIONS": "true"})
        assert skipped.returncode == 0 and "skipped" in skipped.stderr
        assert version(url, "auth_iopex") == ["a14d2f6b8c35"]
        ran = run(["fleet", "up", "--json"], cwd=root, env={})
        payload = json.loads(ran.stdout)
        assert payload["migrations"]["summary"]["migrated"] == 1
        assert version(url, "auth_iopex") == ["a15f8c0e3d96"]

        missing = run(["fleet", "run", "--", "no-such-program-xyz"], cwd=root, env={})
        assert missing.returncode == 2 and "no-such-program-xyz" in missing.stderr
    finally:
        run(["fleet", "db", "stop"], cwd=root, env={})
        shutil.rmtree(folder, ignore_errors=True)


def test_up_waits_for_a_configured_database_and_costs_no_ddl(example: Project) -> None:
    assert example.fleet("up").returncode == 0
    before = ddl_count(example.db_url)
    again = example.fleet("up")
    assert again.returncode == 0 and "nothing pending" in again.stderr
    assert ddl_count(example.db_url) == before
    # Passwords stay masked in the exports; the variables came from the environment anyway.
    assert "DATABASE_URI=" in again.stdout


def test_up_with_an_unreachable_database_exits_2(example: Project) -> None:
    result = example.fleet("up", "--wait-for-db", "1",
                           env={"DATABASE_URI": "postgresql://u:hunter2@127.0.0.1:1/x",
                                "INGESTION_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/y"})
    assert result.returncode == 2
    assert "did not accept connections" in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_a_failed_migration_does_not_start_the_command(example: Project) -> None:
    with psycopg.connect(example.db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA auth_default; CREATE TABLE auth_default.users (id int)")
    result = example.fleet("run", "--", "sh", "-c", "echo started")
    assert result.returncode == 1
    assert "started" not in result.stdout
    assert "FAILED auth/auth_default" in result.stderr


PUBLIC_ROW = ("SELECT nspowner::regrole::text, nspacl::text, "
              "obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = 'public'")


def test_reset_force_empties_public_only_when_told_and_remakes_it_as_postgresql_does(
        example: Project, databases: DatabaseFactory) -> None:
    """ingestion keeps its tables in public, next to what others put there: fleet cannot
    tell its own objects from the rest, so reset --force refuses before dropping anything
    until --include-public says everything in public goes; public is then made again as
    PostgreSQL makes it in a new database. public of a database no service uses as its
    schema is never touched."""
    assert example.fleet("migrate").returncode == 0
    query(example.ingestion_url, "CREATE TABLE public.precious (id int)")
    main, ingestion = (psycopg.conninfo.conninfo_to_dict(u)["dbname"]
                       for u in (example.db_url, example.ingestion_url))
    names = f"{main},{ingestion}"
    before = (schemas(example.db_url), tables(example.ingestion_url, "public"),
              ddl_count(example.db_url), ddl_count(example.ingestion_url))
    assert "precious" in before[1] and "alembic_version" in before[1]

    refused = example.fleet("reset", "--force", "--confirm", names)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "public" in refused.stderr and "--include-public" in refused.stderr
    assert "precious" in refused.stderr and "ingestion" in refused.stderr
    assert (schemas(example.db_url), tables(example.ingestion_url, "public"),
            ddl_count(example.db_url), ddl_count(example.ingestion_url)) == before

    both = example.fleet("reset", "--force", "--include-public", "--keep-public",
                         "--confirm", names)
    assert both.returncode == 2 and "contradict" in both.stderr
    assert schemas(example.db_url) == before[0]

    # --keep-public: everything else goes, public stays as it is (ingestion at its revision).
    kept = example.fleet("reset", "--force", "--keep-public", "--confirm", names)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert f"kept {example.ingestion_url} public (ingestion)" in kept.stdout
    assert tables(example.ingestion_url, "public") == before[1]
    assert not schemas(example.db_url, "auth_%")
    assert version(example.ingestion_url, "public") == ["c34d3f5c6b84"]
    assert example.fleet("migrate").returncode == 0

    fresh = query(databases.create("fleet_fresh"), PUBLIC_ROW)
    done = example.fleet("reset", "--force", "--include-public", "--confirm", names)
    assert done.returncode == 0, done.stdout + done.stderr
    assert tables(example.ingestion_url, "public") == set()
    assert query(example.ingestion_url, PUBLIC_ROW) == fresh
    # The main database's public holds no service: kept with what is in it.
    assert tables(example.db_url, "public") == {"fleet_test_ddl_log"}
    assert not schemas(example.db_url, "auth_%") and not schemas(example.db_url, "fleet")
    again = example.fleet("migrate")
    assert again.returncode == 0, again.stdout + again.stderr
    assert version(example.ingestion_url, "public") == ["c34d3f5c6b84"]
