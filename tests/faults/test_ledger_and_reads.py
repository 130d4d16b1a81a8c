"""What cannot be read is said as such, and never hangs a command.

A session holding a lock on a ledger table must not hang ``status`` or ``migrate`` (the
ledger is history; the version tables say where targets stand), and a version table that
cannot be read must be named, not reported as an unreachable server.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg

from tests.conftest import query, version
from tests.faults.conftest import HEAD, shop_project


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
