"""Busy tables, failing data, a restarting server, and Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from alembic_fleet.embedded import EmbeddedServer
from tests.conftest import DDL_LOG, private_tmp, query, version
from tests.faults.conftest import (
    HEAD,
    closed_gates,
    kill_group,
    shop_project,
    start_fleet,
    wait_no_advisory_locks,
    wait_until_mid_run,
)

pytestmark = pytest.mark.slow


def _at_first_revision(project, db_url: str) -> None:
    result = project.fleet("migrate", "--to", "8000aaaa0001")
    assert result.returncode == 0, result.stderr


LOCK_WAITS = """
    SELECT pid, query_start FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'"""


class Reader(threading.Thread):
    """The application: queries a table over and over while fleet migrates, and records
    whether any of its queries had to queue behind a lock request of fleet's."""

    def __init__(self, url: str, table: str) -> None:
        super().__init__(daemon=True)
        self.url, self.table = url, table
        self.answers = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()
                self.answers += 1
                time.sleep(0.05)


def test_a_held_table_lock_fails_that_tenant_within_bounds(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 5)
    _at_first_revision(project, db_url)
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE shop_s002.items IN ACCESS SHARE MODE")  # held until rollback
    reader = Reader(db_url, "shop_s002.items")
    reader.start()
    try:
        result = project.fleet("migrate", "--json", "--lock-timeout", "1", "--retries", "2",
                               "--jobs", "2")
        # fleet gave up: none of its lock requests is still queued, so the application's
        # next query is answered at once although the other session still holds its lock.
        waiting = query(db_url, LOCK_WAITS)
        answers = reader.answers
        deadline = time.monotonic() + 60
        while reader.answers <= answers + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        answered_after = reader.answers > answers + 2
    finally:
        reader.stop.set()
        reader.join()
        blocker.rollback()
        blocker.close()
    assert result.returncode == 1, result.stderr
    outcome = {t["tenant"]: t for t in json.loads(result.stdout)["targets"]}
    assert outcome["s002"]["outcome"] == "failed"
    # PostgreSQL itself cancelled the DDL by lock_timeout (not a statement timeout, not a
    # wait until the lock came free), three times: the bound on how long the application
    # could queue behind fleet is the lock_timeout of each attempt.
    assert "lock timeout" in outcome["s002"]["error"].lower()
    assert "gave up after 3 attempts" in outcome["s002"]["error"]
    assert "lock_timeout" in outcome["s002"]["hint"] and "over 1s" in outcome["s002"]["hint"]
    assert outcome["s002"]["attempts"] == 3
    assert all(outcome[t]["outcome"] == "migrated" for t in ("s000", "s001", "s003", "s004"))
    assert waiting == []
    assert answered_after and reader.answers > 0
    assert version(db_url, "shop_s002") == ["8000aaaa0001"]


def _release_after_first_lock_timeout(blocker: psycopg.Connection, url: str,
                                      stop: threading.Event) -> None:
    """Roll the blocker back once fleet's first lock request was seen waiting and then gone
    (cancelled by lock_timeout), so the retry, and only a retry, can succeed."""
    first: set[tuple] = set()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                now = set(conn.execute(LOCK_WAITS).fetchall())
                if not first:
                    first = now
                elif not first & now:
                    return
                time.sleep(0.02)
    finally:
        blocker.rollback()


def test_a_lock_released_in_time_lets_the_retry_succeed(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 3)
    _at_first_revision(project, db_url)
    blocker = psycopg.connect(db_url)
    blocker.execute("LOCK TABLE shop_s001.items IN ACCESS SHARE MODE")
    stop = threading.Event()
    releaser = threading.Thread(target=_release_after_first_lock_timeout,
                                args=(blocker, db_url, stop), daemon=True)
    releaser.start()
    try:
        result = project.fleet("migrate", "--json", "--lock-timeout", "1", "--retries", "5",
                               "--jobs", "1")
    finally:
        stop.set()
        releaser.join()
        blocker.close()
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = {t["tenant"]: t for t in json.loads(result.stdout)["targets"]}
    assert outcome["s001"]["outcome"] == "migrated"
    assert outcome["s001"]["attempts"] >= 2
    assert version(db_url, "shop_s001") == [HEAD]


def test_a_lock_wait_gives_way_to_the_other_runner(tmp_path: Path, db_url: str) -> None:
    """A target whose lock another runner holds is re-read after the wait and skipped when
    the other runner finished it."""
    from alembic_fleet.execution.locking import lock_key

    project = shop_project(tmp_path / "p", db_url, 2)
    holder = psycopg.connect(db_url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (lock_key("shop", "shop_s000"),))
    try:
        short = project.fleet("migrate", "--json", "--lock-wait", "0.5", "--jobs", "1")
    finally:
        holder.close()
    assert short.returncode == 1
    outcome = {t["tenant"]: t for t in json.loads(short.stdout)["targets"]}
    assert "held this target's lock" in outcome["s000"]["error"]
    assert outcome["s001"]["outcome"] == "migrated"
    again = project.fleet("migrate", "--json")
    assert again.returncode == 0
    assert version(db_url, "shop_s000") == [HEAD]


def test_failing_data_keeps_the_tenant_and_its_data(tmp_path: Path, db_url: str) -> None:
    project = shop_project(tmp_path / "p", db_url, 4)
    _at_first_revision(project, db_url)
    # One tenant's schema was changed by hand in a way that breaks the next revision.
    query(db_url, "UPDATE shop_s003.items SET name = 'keep me' WHERE id = 1")
    query(db_url, "ALTER TABLE shop_s003.items ADD COLUMN price int")  # rev 2 adds "price"
    result = project.fleet("migrate", "--json")
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    failed = [t for t in payload["targets"] if t["outcome"] == "failed"]
    assert [t["tenant"] for t in failed] == ["s003"]
    assert "revision 8000aaaa0002" in failed[0]["error"]
    assert payload["summary"]["failed"] == 1 and payload["summary"]["migrated"] == 3
    assert version(db_url, "shop_s003") == ["8000aaaa0001"]
    assert query(db_url, "SELECT name FROM shop_s003.items WHERE id = 1")[0][0] == "keep me"
    assert query(db_url, "SELECT count(*) FROM shop_s003.items")[0][0] == 50
    # status and the ledger tell the same story.
    status = json.loads(project.fleet("status", "--json").stdout)
    states = {t["tenant"]: t["state"] for t in status["targets"]}
    assert states == {"s000": "at_head", "s001": "at_head", "s002": "at_head",
                      "s003": "failed"}
    log = json.loads(project.fleet("log", "--json").stdout)["runs"]
    assert log[0]["outcome"] == "failed" and log[0]["failed"] == 1
    details = json.loads(project.fleet("log", "--run", log[0]["run_id"][:8], "--json").stdout)
    assert {t["schema_name"] for t in details["targets"] if t["outcome"] == "failed"} == {
        "shop_s003"}


def test_server_restart_mid_run(tmp_path: Path) -> None:
    """The server goes away while one target is committed and two are inside their
    transactions: those retry after reconnecting (or fail cleanly), and a rerun completes."""
    folder = private_tmp("fleet-test-restart-")
    server = EmbeddedServer(folder / ".fleet")
    try:
        admin = server.url("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE restart")
        url = server.url("restart")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(DDL_LOG)
        project = shop_project(tmp_path / "p", url, 12, gate=True)
        # The restart ends the gates' session too: after it, nothing holds the targets back.
        with closed_gates(url, range(1, 12)):
            runner = start_fleet(project, "migrate", "--json", "--jobs", "2", "--retries", "4",
                                 "--lock-timeout", "120")
            try:
                wait_until_mid_run(url, runner, done=1, waiting=2)
                server.stop()
                time.sleep(1.0)  # the server stays down for a moment
                server.start()
                out, err = runner.communicate(timeout=180)
            finally:
                if runner.returncode is None:
                    kill_group(runner)
        assert runner.returncode in (0, 1), err
        payload = json.loads(out)
        for target in payload["targets"]:
            assert target["outcome"] in ("migrated", "failed"), json.dumps(target)
            if target["outcome"] == "failed":
                assert target["error"]
        # The two targets cut off mid-transaction were tried again.
        assert sum(t.get("attempts", 1) > 1 for t in payload["targets"]) >= 2, out
        rerun = project.fleet("migrate", "--json")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        for i in range(12):
            assert version(url, f"shop_s{i:03d}") == [HEAD]
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("jobs", [1, 2])
def test_ctrl_c_rolls_back_and_exits_130(tmp_path: Path, db_url: str, jobs: int) -> None:
    project = shop_project(tmp_path / "p", db_url, 8, gate=True)
    with closed_gates(db_url, range(1, 8)):
        # A long lock_timeout: a target waiting at its gate must not give up on its own.
        runner = start_fleet(project, "migrate", "--json", "--jobs", str(jobs),
                             "--lock-timeout", "120")
        try:
            # Caught with one target committed and every worker inside a target's transaction.
            wait_until_mid_run(db_url, runner, done=1, waiting=jobs)
            # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group.
            os.killpg(runner.pid, signal.SIGINT)
            out, err = runner.communicate(timeout=60)
        finally:
            if runner.returncode is None:
                kill_group(runner)
    assert runner.returncode == 130, err
    payload = json.loads(out)
    assert payload["interrupted"] is True
    # What the report says is what the database holds: a migrated target is at head, any
    # other one left no trace (its transaction was rolled back, its schema with it).
    for target in payload["targets"]:
        schema = target["schema"]
        if target["outcome"] == "migrated":
            assert version(db_url, schema) == [HEAD], json.dumps(target)
        else:
            assert query(db_url, "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                         (schema,))[0][0] == 0, json.dumps(target)
    outcomes = [t["outcome"] for t in payload["targets"]]
    # The committed one stays, the interrupted ones roll back, the rest never start.
    assert (outcomes.count("migrated"), outcomes.count("failed"), outcomes.count("skipped")) == (
        1, jobs, 7 - jobs), out
    wait_no_advisory_locks(db_url)
    rerun = project.fleet("migrate")
    assert rerun.returncode == 0
