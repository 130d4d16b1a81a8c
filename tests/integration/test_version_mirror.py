"""``version_mirror = true``: reads take where each schema stands from one table that a
trigger on every version table keeps, and never trust it when it could be stale.

Each case changes a version table the way a user or an operator would (plain SQL, the
trigger disabled around a write, ``session_replication_role``, a TRUNCATE, a table made
again) and checks that ``fleet status`` says what the table holds.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Project, query, version
from tests.integration.test_parallel import _service
from tests.integration.test_replay_correctness import _revision

pytestmark = pytest.mark.slow

FIRST = _revision("9200aaaa0001", None,
                  'op.create_table("t", sa.Column("id", sa.Integer, primary_key=True))')
SECOND = _revision("9200aaaa0002", "9200aaaa0001",
                   'op.add_column("t", sa.Column("a", sa.Integer))')
HEAD = "9200aaaa0002"


def _project(tmp_path: Path, db_url: str, *, mirror: bool = True) -> Project:
    root = tmp_path / "proj"
    _service(root, "svc", {"first.py": FIRST, "second.py": SECOND})
    (root / "fleet.toml").write_text(
        f'database = "${{DATABASE_URI}}"\ntenants = ["a", "b", "c"]\n'
        f'version_mirror = {"true" if mirror else "false"}\n\n'
        '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    return Project(root, {"DATABASE_URI": db_url}, db_url, db_url)


def _states(project: Project) -> dict[str, tuple[str, tuple[str, ...]]]:
    result = project.fleet("status", "--json")
    assert result.returncode in (0, 3), result.stderr
    return {t["schema"]: (t["state"], tuple(t["current"]))
            for t in json.loads(result.stdout)["targets"]}


def _mirrored(db_url: str) -> dict[str, list[str]]:
    return {schema: list(versions) for schema, versions in query(
        db_url, "SELECT n.nspname, m.versions FROM fleet.version_mirror m "
        "JOIN pg_class c ON c.oid = m.relid JOIN pg_namespace n ON n.oid = c.relnamespace")}


def test_migrate_installs_the_mirror_and_status_reads_it(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url)
    result = project.fleet("migrate")
    assert result.returncode == 0, result.stderr
    assert "mirror" not in result.stderr, result.stderr
    assert _mirrored(db_url) == {f"svc_{t}": [HEAD] for t in "abc"}
    # A table locked by a long transaction: reading it would wait; the mirror does not.
    with psycopg.connect(db_url) as holder:
        holder.execute('LOCK TABLE "svc_b".alembic_version IN ACCESS EXCLUSIVE MODE')
        started = time.monotonic()
        states = _states(project)
        assert time.monotonic() - started < 30
    assert states == {f"svc_{t}": ("at_head", (HEAD,)) for t in "abc"}
    again = project.fleet("migrate", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["migrated"] == 0


@pytest.mark.parametrize("change", [
    "plain update",
    "trigger disabled around the write",
    "replica role",
    "truncate",
    "table made again",
    "schema dropped",
    "table rewritten",
    "inheritance child",
    "function replaced",
    "updated through an inheritance parent",
    "deleted through a partitioned parent",
    "row trigger dropped",
    "version column made again",
    "columns swapped",
    "mirror row put back from a backup",
])
def test_status_says_what_the_table_holds(tmp_path: Path, db_url: str, change: str) -> None:
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    table = '"svc_a".alembic_version'
    statements = {
        "plain update": [f"UPDATE {table} SET version_num = '9200aaaa0001'"],
        "trigger disabled around the write": [
            f"ALTER TABLE {table} DISABLE TRIGGER fleet_version_mirror",
            f"UPDATE {table} SET version_num = '9200aaaa0001'",
            f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER fleet_version_mirror"],
        "replica role": ["SET session_replication_role = replica",
                         f"UPDATE {table} SET version_num = '9200aaaa0001'"],
        "truncate": [f"TRUNCATE {table}"],
        "table made again": [
            f"CREATE TABLE svc_a.saved AS SELECT * FROM {table}", f"DROP TABLE {table}",
            f"CREATE TABLE {table} (version_num varchar(32) PRIMARY KEY)",
            f"INSERT INTO {table} VALUES ('9200aaaa0001')"],
        "schema dropped": ["DROP SCHEMA svc_a CASCADE"],
        # No statement writes the rows: a rewrite changes them without any trigger.
        "table rewritten": [f"ALTER TABLE {table} ALTER COLUMN version_num TYPE varchar(40) "
                            "USING '9200aaaa0001'"],
        # Reading the table reads its children too (only a row there says the revision).
        "inheritance child": [
            f"DELETE FROM {table}", f"CREATE TABLE svc_a.child () INHERITS ({table})",
            "INSERT INTO svc_a.child VALUES ('9200aaaa0001')"],
        # Someone with the ledger owner's rights makes the function do nothing.
        "function replaced": [
            "CREATE OR REPLACE FUNCTION fleet.mirror_versions() RETURNS trigger "
            "LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp "
            "AS $$BEGIN RETURN NULL; END$$",
            f"UPDATE {table} SET version_num = '9200aaaa0001'"],
        # A statement on a parent fires no statement trigger of the table it changes, and
        # the table's catalog rows end as they were once it is detached again.
        "updated through an inheritance parent": [
            "CREATE TABLE public.all_versions (version_num varchar(32))",
            f"ALTER TABLE {table} INHERIT public.all_versions",
            "UPDATE public.all_versions SET version_num = '9200aaaa0001'",
            f"ALTER TABLE {table} NO INHERIT public.all_versions"],
        "deleted through a partitioned parent": [
            "CREATE TABLE public.pv (version_num varchar(32) NOT NULL) "
            "PARTITION BY LIST (version_num)",
            f"ALTER TABLE public.pv ATTACH PARTITION {table} DEFAULT",
            "DELETE FROM public.pv",
            f"ALTER TABLE public.pv DETACH PARTITION {table}"],
        "row trigger dropped": [
            f"DROP TRIGGER fleet_version_mirror_rows ON {table}",
            "CREATE TABLE public.all_versions ()",
            f"ALTER TABLE {table} INHERIT public.all_versions",
            "DELETE FROM public.all_versions",
            f"ALTER TABLE {table} NO INHERIT public.all_versions",
            f"INSERT INTO {table} VALUES ('9200aaaa0001')"],
        # Column changes that rewrite nothing: the column read is another one.
        "version column made again": [
            f"ALTER TABLE {table} DROP COLUMN version_num",
            f"ALTER TABLE {table} ADD COLUMN version_num varchar(32) NOT NULL "
            "DEFAULT '9200aaaa0001'"],
        "columns swapped": [
            f"ALTER TABLE {table} ADD COLUMN other varchar(32)",
            f"UPDATE {table} SET other = '9200aaaa0001'",
            f"ALTER TABLE {table} RENAME COLUMN version_num TO was",
            f"ALTER TABLE {table} RENAME COLUMN other TO version_num",
            f"ALTER TABLE {table} DROP COLUMN was"],
        # A restore of the ledger's rows (or an edit by hand) brings back a row the
        # trigger wrote earlier, under the same trigger, table and function.
        "mirror row put back from a backup": [
            "CREATE TABLE public.saved AS SELECT * FROM fleet.version_mirror",
            f"UPDATE {table} SET version_num = '9200aaaa0001'",
            "DELETE FROM fleet.version_mirror",
            "INSERT INTO fleet.version_mirror SELECT * FROM public.saved"],
    }[change]
    # What the revisions made is undone as the version row says, so the next run works.
    undo = {"truncate": ["DROP TABLE svc_a.t"], "schema dropped": [],
            "deleted through a partitioned parent": ["DROP TABLE svc_a.t"]}.get(
        change, ["ALTER TABLE svc_a.t DROP COLUMN a"])
    with psycopg.connect(db_url, autocommit=False) as conn:  # one transaction
        for statement in undo + statements:
            conn.execute(statement)
    expected = {"truncate": ("behind", ()), "schema dropped": ("missing", ()),
                "deleted through a partitioned parent": ("behind", ())}.get(
        change, ("behind", ("9200aaaa0001",)))
    assert _states(project)["svc_a"] == expected
    assert _states(project)["svc_b"] == ("at_head", (HEAD,))
    if change == "inheritance child":  # not a shape fleet migrates further: undone
        query(db_url, "DROP TABLE svc_a.child")
        query(db_url, f"INSERT INTO {table} VALUES ('9200aaaa0001')")
    # The next migrate brings it to head, and the mirror follows.
    assert project.fleet("migrate").returncode == 0
    assert version(db_url, "svc_a") == [HEAD]
    assert _mirrored(db_url)["svc_a"] == [HEAD]
    assert _states(project)["svc_a"] == ("at_head", (HEAD,))


def test_plain_alembic_in_the_service_folder_moves_the_mirror(tmp_path: Path,
                                                               db_url: str) -> None:
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    done = project.alembic("svc", "downgrade", "-1", env={"ALEMBIC_SCHEMA": "svc_c"})
    assert done.returncode == 0, done.stderr
    assert version(db_url, "svc_c") == ["9200aaaa0001"]
    assert _mirrored(db_url)["svc_c"] == ["9200aaaa0001"]
    assert _states(project)["svc_c"] == ("behind", ("9200aaaa0001",))


def test_without_the_setting_no_trigger_is_made(tmp_path: Path, db_url: str) -> None:
    project = _project(tmp_path, db_url, mirror=False)
    assert project.fleet("migrate").returncode == 0
    assert not query(db_url, "SELECT 1 FROM pg_trigger WHERE tgname = 'fleet_version_mirror'")
    assert not query(db_url, "SELECT to_regclass('fleet.version_mirror')")[0][0]


def test_a_table_locked_by_the_application_is_left_without_the_mirror(
        tmp_path: Path, db_url: str) -> None:
    """Giving a table its trigger waits for the application's locks no longer than
    lock_timeout: the run succeeds, says so, and the table is read directly."""
    project = _project(tmp_path, db_url, mirror=False)
    assert project.fleet("migrate").returncode == 0
    toml = project.root / "fleet.toml"
    toml.write_text(toml.read_text().replace("version_mirror = false",
                                             "version_mirror = true\nlock_timeout = 1"))
    with psycopg.connect(db_url) as holder:
        holder.execute('LOCK TABLE "svc_b".alembic_version IN ROW EXCLUSIVE MODE')
        result = project.fleet("migrate")
    assert result.returncode == 0, result.stderr
    assert "version mirror" in result.stderr and "read directly" in result.stderr
    assert _states(project)["svc_b"] == ("at_head", (HEAD,))
    assert project.fleet("migrate").returncode == 0  # the next run installs it
    assert set(_mirrored(db_url)) == {"svc_a", "svc_b", "svc_c"}


def test_two_writers_at_once_are_both_mirrored(tmp_path: Path, db_url: str) -> None:
    """The second of two concurrent writers computed the mirror from a snapshot taken
    before the first committed, and wrote over it: two plain alembic runs on two branches
    of one schema left the mirror without one of the heads."""
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    first = psycopg.connect(db_url)
    first.execute("INSERT INTO svc_b.alembic_version VALUES ('9200aaaa00x1')")
    second = subprocess.Popen(
        ["psql", db_url, "-c", "INSERT INTO svc_b.alembic_version VALUES ('9200aaaa00y2')"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the second waits for the first's lock on the mirror row
    first.commit()
    first.close()
    assert second.wait(30) == 0, second.stderr.read() if second.stderr else ""
    table = version(db_url, "svc_b")
    assert table == sorted([HEAD, "9200aaaa00x1", "9200aaaa00y2"])
    assert sorted(_mirrored(db_url)["svc_b"]) == table


def test_a_no_op_migrate_gives_back_the_trigger_of_a_table_it_did_not_migrate(
        tmp_path: Path, db_url: str) -> None:
    """The plan read svc_b directly (its trigger was disabled and enabled again): the
    upkeep after a run that migrates nothing makes it trusted again, and leaves the
    tables read from the mirror alone."""
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    table = '"svc_b".alembic_version'
    mark = "SELECT trigger_row FROM fleet.version_mirror WHERE relid = '{}'::regclass"
    before_a = query(db_url, mark.format('"svc_a".alembic_version'))
    query(db_url, f"ALTER TABLE {table} DISABLE TRIGGER fleet_version_mirror")
    query(db_url, f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER fleet_version_mirror")
    untrusted = query(db_url, mark.format(table))
    again = project.fleet("migrate", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["summary"]["migrated"] == 0
    assert query(db_url, mark.format(table)) != untrusted  # written again, fresh mark
    assert query(db_url, mark.format('"svc_a".alembic_version')) == before_a
    with psycopg.connect(db_url) as holder:  # now read from the mirror: no wait
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        assert _states(project)["svc_b"] == ("at_head", (HEAD,))


def test_the_rows_of_removed_tenants_leave_the_mirror(tmp_path: Path, db_url: str) -> None:
    """A removed tenant's schema is dropped with its version table, and no trigger fires
    on a DROP: its mirror row stayed for good. The next run that gives a table its
    triggers also forgets the rows of tables that are gone."""
    project = _project(tmp_path, db_url)
    assert project.fleet("migrate").returncode == 0
    assert project.fleet("tenants", "remove", "c", "--yes").returncode == 0
    assert sorted(_mirrored(db_url)) == ["svc_a", "svc_b"]  # the rows of live tables
    assert query(db_url, "SELECT count(*) FROM fleet.version_mirror") == [(3,)]  # c's stays
    assert project.fleet("tenants", "add", "d").returncode == 0
    assert sorted(_mirrored(db_url)) == ["svc_a", "svc_b", "svc_d"]
    assert query(db_url, "SELECT count(*) FROM fleet.version_mirror") == [(3,)]
