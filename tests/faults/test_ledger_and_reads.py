"""What cannot be read is said as such, and never hangs a command.

A session holding a lock on a ledger table must not hang ``status`` or ``migrate`` (the
ledger is history; the version tables say where targets stand), and a version table that
cannot be read must be named, not reported as an unreachable server.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import query, version
from tests.faults.conftest import HEAD, shop_project, start_fleet

pytestmark = pytest.mark.slow


def test_a_locked_ledger_is_a_warning_not_a_hang(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 3)
    assert project.fleet("migrate", "--to", "8000aaaa0001").returncode == 0
    holder = psycopg.connect(db_url)
    holder.execute("LOCK TABLE fleet.run_targets, fleet.applied_revisions, fleet.runs "
                   "IN ACCESS EXCLUSIVE MODE")
    done = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["status"] = project.fleet("status", "--json")
        done.set()

    try:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert done.wait(60), "fleet status hung on a locked ledger"
        status = outcome["status"]
        assert status.returncode == 3, status.stderr
        payload = json.loads(status.stdout)
        assert {t["state"] for t in payload["targets"]} == {"behind"}
        assert any("cannot read the ledger" in w for w in payload["warnings"])
        # migrate cannot record its run while the ledger is locked: it refuses, in bounded
        # time, before touching any target.
        refused = project.fleet("migrate", "--lock-timeout", "1")
        assert refused.returncode == 2, refused.stderr
        assert "ledger" in refused.stderr
        assert all(version(db_url, f"shop_s{i:03d}") == ["8000aaaa0001"] for i in range(3))
    finally:
        holder.rollback()
        holder.close()
    assert project.fleet("migrate").returncode == 0
    assert all(version(db_url, f"shop_s{i:03d}") == [HEAD] for i in range(3))


def test_an_unreadable_version_table_is_named(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 3)
    assert project.fleet("migrate").returncode == 0
    # A stray table named like the version table, in a schema the template matches.
    query(db_url, "CREATE SCHEMA shop_stray")
    query(db_url, "CREATE TABLE shop_stray.alembic_version (version_num integer)")
    query(db_url, "REVOKE ALL ON shop_s001.alembic_version FROM PUBLIC")
    query(db_url, "CREATE ROLE fleet_reader_t LOGIN")
    try:
        query(db_url, "GRANT USAGE ON SCHEMA shop_s000, shop_s002, shop_stray TO fleet_reader_t")
        query(db_url, "GRANT USAGE ON SCHEMA shop_s001 TO fleet_reader_t")
        query(db_url, "GRANT SELECT ON shop_s000.alembic_version, shop_s002.alembic_version, "
              "shop_stray.alembic_version TO fleet_reader_t")
        reader = db_url.replace("postgres@", "fleet_reader_t@", 1)
        status = project.fleet("status", "--json", env={"DATABASE_URI": reader})
        assert status.returncode == 3, status.stderr
        payload = json.loads(status.stdout)
        states = {t["schema"]: t["state"] for t in payload["targets"]}
        assert states["shop_s000"] == "at_head" and states["shop_s002"] == "at_head"
        assert states["shop_s001"] == "failed"
        assert any("shop_s001.alembic_version" in w and "permission denied" in w
                   for w in payload["warnings"])
        assert "cannot connect" not in status.stdout + status.stderr
    finally:
        query(db_url, "DROP OWNED BY fleet_reader_t")
        query(db_url, "DROP ROLE fleet_reader_t")


def test_a_version_table_locked_by_a_migration_is_waited_for_lock_wait_only(
        tmp_path: Path, db_url: str) -> None:
    """A session holding a version table (a long migration's ALTER) hung ``fleet status``
    until it committed, however long; it waits ``lock_wait``, then names the table."""
    project = shop_project(tmp_path / "p", db_url, 3)
    assert project.fleet("migrate").returncode == 0
    toml = project.root / "fleet.toml"
    toml.write_text("lock_wait = 2\n" + toml.read_text())
    holder = psycopg.connect(db_url)
    holder.execute("LOCK TABLE shop_s001.alembic_version IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(45, holder.close)  # a hang ends, and fails below
    release.start()
    try:
        started = time.monotonic()
        status = project.fleet("status", "--json")
        took = time.monotonic() - started
    finally:
        release.cancel()
        holder.close()
    assert took < 30, took
    assert status.returncode == 3, status.stderr
    payload = json.loads(status.stdout)
    states = {t["schema"]: t["state"] for t in payload["targets"]}
    assert states == {"shop_s000": "at_head", "shop_s001": "failed", "shop_s002": "at_head"}
    assert any("shop_s001.alembic_version" in w and "locked by another session" in w
               for w in payload["warnings"]), payload["warnings"]
    assert json.loads(project.fleet("status", "--json").stdout)["summary"]["at_head"] == 3


def test_one_lock_budget_for_the_whole_target(tmp_path: Path, db_url: str) -> None:
    """After its first strong lock, a target's later lock waits share what is left of one
    lock_timeout (the application waits behind the first table for all of them)."""
    from tests.integration.test_parallel import _service
    from tests.integration.test_replay_correctness import _revision

    base = _revision("9200aaaa0000", None, '''
        op.create_table("t1", sa.Column("id", sa.Integer, primary_key=True))
        op.create_table("t2", sa.Column("id", sa.Integer, primary_key=True))
    ''')
    alter = _revision("9200aaaa0001", "9200aaaa0000", '''
        op.add_column("t1", sa.Column("a", sa.Integer))
        op.add_column("t2", sa.Column("b", sa.Integer))
        op.execute("CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS v")
    ''')
    root = tmp_path / "budget"
    _service(root, "svc", {"base.py": base, "alter.py": alter})
    (root / "fleet.toml").write_text('database = "${DATABASE_URI}"\ntenants = ["a"]\n\n'
                                     '[services.svc]\npath = "svc"\nschema = "svc_{tenant}"\n')
    from tests.conftest import Project

    project = Project(root, {"DATABASE_URI": db_url}, db_url, db_url)
    assert project.fleet("migrate", "--to", "9200aaaa0000").returncode == 0
    holder = psycopg.connect(db_url)
    holder.execute("SELECT count(*) FROM svc_a.t2")  # ACCESS SHARE on t2 until rollback
    try:
        runner = start_fleet(project, "migrate", "--lock-timeout", "4", "--retries", "0")
        deadline = time.monotonic() + 60
        while not query(db_url, "SELECT count(*) FROM pg_locks l JOIN pg_class c "
                        "ON c.oid = l.relation WHERE NOT l.granted AND c.relname = 't2'"
                        )[0][0]:
            assert time.monotonic() < deadline, "the migration never waited for t2"
            time.sleep(0.05)
        time.sleep(1.5)  # the migration holds t1 and waits for t2 this long
    finally:
        holder.rollback()
        holder.close()
    _out, err = runner.communicate(timeout=120)
    assert runner.returncode == 0, err
    left = query(db_url, "SELECT v FROM svc_a.seen")[0][0]
    assert left.endswith("ms") and int(left[:-2]) < 4000 - 1000, left


def test_a_downgraded_revision_may_be_fixed_and_reapplied(tmp_path: Path, db_url: str) -> None:
    """A downgrade is recorded: the checksums of the revisions it removed are forgotten, so
    fixing the file and migrating again is not refused as an edited applied revision."""
    project = shop_project(tmp_path / "p", db_url, 2)
    assert project.fleet("migrate").returncode == 0
    for tenant in ("s000", "s001"):
        down = project.fleet("downgrade", "shop", "-1", "--tenant", tenant, "--yes")
        assert down.returncode == 0, down.stderr
        query(db_url, f"DROP INDEX shop_{tenant}.ix_orders_item")  # its downgrade() is 'pass'
    last = project.root / "shop" / "migrations" / "versions" / f"{HEAD}.py"
    last.write_text(last.read_text().replace('["item_id"]', '["item_id", "id"]'))
    result = project.fleet("migrate", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["summary"]["migrated"] == 2
    runs = query(db_url, "SELECT command, outcome FROM fleet.runs ORDER BY started_at")
    assert [c for c, _ in runs if c.startswith("fleet downgrade")] == [
        "fleet downgrade shop/shop_s000 -1", "fleet downgrade shop/shop_s001 -1"]


def test_a_locked_table_is_sized_as_unknown_not_waited_for(tmp_path: Path, db_url: str
                                                           ) -> None:
    """fleet plan reads the size of every table a pending statement locks; a table another
    session holds (or waits for) in ACCESS EXCLUSIVE mode cannot be sized without queueing
    behind it. The plan answers at once, with that copy's size unknown and a warning."""
    project = shop_project(tmp_path / "p", db_url, 3)
    # A long lock_timeout: answering in less time proves the plan never waited on the lock.
    toml = project.root / "fleet.toml"
    toml.write_text("lock_timeout = 60\n" + toml.read_text())
    assert project.fleet("migrate", "--to", "8000aaaa0001").returncode == 0
    for tenant in range(3):
        query(db_url, f"ANALYZE shop_s{tenant:03d}.items")
    # s001: a migration of the application in progress, holding its table.
    holder = psycopg.connect(db_url)
    holder.execute("LOCK TABLE shop_s001.items IN ACCESS EXCLUSIVE MODE")
    # s002: a reader holds the table and an ALTER waits behind it; a new reader would queue
    # behind the ALTER.
    reader = psycopg.connect(db_url)
    reader.execute("SELECT count(*) FROM shop_s002.items")
    waiter = psycopg.connect(db_url, autocommit=True)
    waiter_pid = waiter.info.backend_pid
    blocked = threading.Thread(target=lambda: waiter.execute(
        "ALTER TABLE shop_s002.items ADD COLUMN blocked integer"), daemon=True)
    blocked.start()
    done = threading.Event()
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        outcome["plan"] = project.fleet("plan", "--format", "json")
        outcome["seconds"] = time.monotonic() - started
        outcome["text"] = project.fleet("plan")
        done.set()

    try:
        deadline = time.monotonic() + 30
        while not query(db_url, "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                        (waiter_pid,))[0][0]:
            assert time.monotonic() < deadline, "the ALTER never queued"
            time.sleep(0.05)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert done.wait(50), "fleet plan waited on a locked table"
        assert outcome["seconds"] < 30
        plan = outcome["plan"]
        assert plan.returncode == 0, plan.stdout + plan.stderr
        payload = json.loads(plan.stdout)
        (service,) = payload["services"]
        add_price = next(r for r in service["revisions"] if r["revision"] == "8000aaaa0002")
        (effect,) = add_price["statements"][0]["locks"]
        assert effect["relation"] == "items" and effect["copies"] == 3
        # The largest copy may be a locked one: unknown, not a guess from the others.
        assert effect["largest"]["bytes"] is None
        assert effect["largest"]["schema"] in ("shop_s001", "shop_s002")
        assert effect["largest"]["rows"] == 50  # reltuples: the catalog, no lock needed
        locked = [w for w in payload["warnings"] if "size" in w]
        assert len(locked) == 1, payload["warnings"]
        assert "shop_s001.items" in locked[0] and "shop_s002.items" in locked[0]
        assert "shop_s000" not in locked[0] and "locked" in locked[0]
        text = outcome["text"]
        assert text.returncode == 0, text.stderr
        assert "size unknown" in text.stdout and "shop_s001.items" in text.stderr
    finally:
        holder.rollback()
        holder.close()
        reader.rollback()
        reader.close()
        blocked.join(30)
        waiter.close()
    # Once the locks are gone, every copy has its size again.
    payload = json.loads(project.fleet("plan", "--format", "json").stdout)
    add_price = next(r for r in payload["services"][0]["revisions"]
                     if r["revision"] == "8000aaaa0002")
    effect = add_price["statements"][0]["locks"][0]
    assert effect["largest"]["bytes"] > 0 and not payload["warnings"]
